//! What the tracer reads from a decoded header block: the pseudo-header fields and a short
//! allowlist. The value of any other field (`authorization`, `proxy-authorization`, `cookie`,
//! `set-cookie` among them) is never copied out of the decoder.

use super::hpack::{Field, Outcome, Text};

/// `tracestate` fields kept per block (a valid list has at most 32 members anyway).
const MAX_TRACESTATE_FIELDS: usize = 32;

/// A `grpc-status` value as read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcStatus {
    Code(u32),
    /// Present but not a decimal number.
    Invalid,
}

/// The facts of one header block.
#[derive(Debug, Default)]
pub struct Facts {
    pub method: Option<String>,
    pub path: Option<String>,
    pub authority: Option<String>,
    /// `:scheme`, when `http` or `https`.
    pub scheme: Option<&'static str>,
    pub status: Option<u16>,
    /// `host`, in case a request carries it instead of `:authority`.
    pub host: Option<String>,
    pub user_agent: Option<Vec<u8>>,
    /// `content-type` is a gRPC one.
    pub grpc: bool,
    pub grpc_status: Option<GrpcStatus>,
    /// The first two `traceparent` values (two tell a duplicated header apart).
    pub traceparent: Vec<Vec<u8>>,
    pub tracestate: Vec<Vec<u8>>,
    /// A request pseudo-header field was read (`:method`, `:scheme`, `:path`, `:authority`,
    /// `:protocol`): the block is a request head (or a pushed request).
    pub request_pseudo: bool,
    /// `:status` was read: the block is a response head.
    pub response_pseudo: bool,
    /// Fields whose name could not be decoded (their value may have been anything).
    pub unknown_names: u32,
    /// A field the tracer reads whose value was not usable (not UTF-8, not a number).
    pub unreadable: bool,
    pub outcome: Outcome,
}

impl Facts {
    /// Every field of the block was read with its name: a field missing here is not in it.
    pub fn is_complete(&self) -> bool {
        self.outcome.is_whole() && self.unknown_names == 0
    }

    /// Takes in one decoded field.
    pub fn read(&mut self, field: Field<'_>) {
        let Text::Known(name) = field.name else {
            self.unknown_names += 1;
            return;
        };
        // Request pseudo-headers are recognised by name alone, whatever their value.
        match name {
            b":method" | b":scheme" | b":path" | b":authority" | b":protocol" => {
                self.request_pseudo = true;
            }
            b":status" => self.response_pseudo = true,
            _ => {}
        }
        let Text::Known(value) = field.value else {
            return;
        };
        match name {
            b":method" => keep_str(&mut self.method, value, &mut self.unreadable),
            b":path" => keep_str(&mut self.path, value, &mut self.unreadable),
            b":authority" => keep_str(&mut self.authority, value, &mut self.unreadable),
            b"host" => keep_str(&mut self.host, value, &mut self.unreadable),
            b":scheme" => {
                self.scheme = self.scheme.or(match value {
                    b"http" => Some("http"),
                    b"https" => Some("https"),
                    _ => None,
                });
            }
            b":status" if self.status.is_none() => {
                self.status = decimal(value)
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| (100..1000).contains(n));
                self.unreadable |= self.status.is_none();
            }
            b"user-agent" => {
                self.user_agent.get_or_insert_with(|| value.to_vec());
            }
            b"content-type" => self.grpc |= is_grpc(value),
            b"grpc-status" => {
                self.grpc_status.get_or_insert(match decimal(value) {
                    Some(code) => GrpcStatus::Code(code),
                    None => GrpcStatus::Invalid,
                });
            }
            b"traceparent" if self.traceparent.len() < 2 => {
                self.traceparent.push(value.to_vec());
            }
            b"tracestate" if self.tracestate.len() < MAX_TRACESTATE_FIELDS => {
                self.tracestate.push(value.to_vec());
            }
            _ => {}
        }
    }
}

fn keep_str(slot: &mut Option<String>, value: &[u8], unreadable: &mut bool) {
    if slot.is_some() {
        return;
    }
    match std::str::from_utf8(value) {
        Ok(s) => *slot = Some(s.to_string()),
        Err(_) => *unreadable = true,
    }
}

/// A decimal number of at most nine digits.
fn decimal(value: &[u8]) -> Option<u32> {
    if value.is_empty() || value.len() > 9 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

/// `application/grpc`, `application/grpc+proto`, `application/grpc;...` (not gRPC-Web, whose
/// status travels in the body).
pub fn is_grpc(content_type: &[u8]) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    content_type.len() >= GRPC.len()
        && content_type[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(content_type.get(GRPC.len()), None | Some(b'+' | b';'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(fields: &[(Option<&str>, Option<&str>)]) -> Facts {
        let mut facts = Facts::default();
        for (name, value) in fields {
            facts.read(Field {
                name: name.map_or(Text::Unknown, |n| Text::Known(n.as_bytes())),
                value: value.map_or(Text::Unknown, |v| Text::Known(v.as_bytes())),
            });
        }
        facts
    }

    #[test]
    fn pseudo_headers_and_the_allowlist() {
        let f = read(&[
            (Some(":method"), Some("POST")),
            (Some(":scheme"), Some("http")),
            (Some(":path"), Some("/pkg.Svc/Do")),
            (Some(":authority"), Some("svc:50051")),
            (Some("content-type"), Some("application/grpc+proto")),
            (Some("authorization"), Some("Bearer s3cr3t")),
            (Some("cookie"), Some("session=abc")),
            (Some("traceparent"), Some("00-aa-bb-01")),
            (Some("user-agent"), Some("grpc-go/1.60")),
            (None, None),
        ]);
        assert_eq!(f.method.as_deref(), Some("POST"));
        assert_eq!(f.path.as_deref(), Some("/pkg.Svc/Do"));
        assert_eq!(f.authority.as_deref(), Some("svc:50051"));
        assert_eq!(f.scheme, Some("http"));
        assert!(f.grpc && f.request_pseudo && !f.response_pseudo);
        assert_eq!(f.traceparent, vec![b"00-aa-bb-01".to_vec()]);
        assert_eq!(f.unknown_names, 1);
        assert!(!format!("{f:?}").contains("s3cr3t") && !format!("{f:?}").contains("session"));
    }

    #[test]
    fn status_values() {
        let f = read(&[
            (Some(":status"), Some("200")),
            (Some("grpc-status"), Some("14")),
        ]);
        assert_eq!(f.status, Some(200));
        assert_eq!(f.grpc_status, Some(GrpcStatus::Code(14)));
        assert!(f.response_pseudo);
        let f = read(&[
            (Some(":status"), Some("2000")),
            (Some("grpc-status"), Some("OK")),
        ]);
        assert_eq!(f.status, None);
        assert!(f.unreadable);
        assert_eq!(f.grpc_status, Some(GrpcStatus::Invalid));
        // A pseudo-header whose value is unknown still says what the block is.
        let f = read(&[(Some(":path"), None)]);
        assert!(f.request_pseudo && f.path.is_none());
    }

    #[test]
    fn grpc_content_types() {
        assert!(is_grpc(b"application/grpc"));
        assert!(is_grpc(b"application/grpc+json"));
        assert!(is_grpc(b"Application/GRPC;charset=utf-8"));
        assert!(!is_grpc(b"application/grpc-web"));
        assert!(!is_grpc(b"application/grpc-web+proto"));
        assert!(!is_grpc(b"application/json"));
        assert!(!is_grpc(b"application/grp"));
    }
}
