//! Reading the frames of one direction of a connection from its [`StreamBuffer`], through
//! capture gaps.
//!
//! Frame headers and the few payload bytes the tracer needs (padding length, priority, error
//! codes, settings) are read from captured bytes; every payload is then counted by its length,
//! captured or not, so a DATA frame larger than the capture keeps the stream in sync. A header
//! block is copied as it arrives (at most [`MAX_HEADER_BLOCK`] bytes); when part of it lies in
//! a gap, the captured prefix is decoded and the direction's HPACK table loses its history.
//!
//! When the next frame header itself is not captured (it lies in a gap, usually after a large
//! frame in the same syscall) or is invalid, the framing is lost: the rest of the syscall is
//! dropped, and reading resumes at the first later syscall that starts with plausible frames
//! ([`frame::starts_frames`]). Header blocks may have been missed meanwhile, so the HPACK table
//! loses its history too.

use super::fields::Facts;
use super::frame::{self, FrameHeader, HEADER_LEN, PREFACE};
use super::hpack::Decoder;
use crate::protocols::{SegTime, StreamBuffer};

/// Longest header block reassembled; beyond, the block is treated as cut there.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// The block buffer is shrunk back after a block larger than this.
const BLOCK_KEEP: usize = 16 * 1024;

/// What reading found.
#[derive(Debug)]
pub enum Event {
    /// A complete header block (HEADERS and its CONTINUATION frames).
    Headers(Box<Block>),
    /// A DATA frame ended.
    Data {
        stream: u32,
        end_stream: bool,
        last: SegTime,
    },
    Reset {
        stream: u32,
        /// `None` when the error code was not captured.
        code: Option<u32>,
        last: SegTime,
    },
    GoAway {
        /// `None` when it was not captured.
        last_stream: Option<u32>,
        last: SegTime,
    },
    /// SETTINGS from this direction's sender: they bound what the other direction sends.
    Settings {
        header_table_size: Option<u32>,
        max_frame_size: Option<u32>,
    },
    /// The framing was lost at `at`: frames of this direction may have been missed from there
    /// until reading resumed.
    Lost { at: SegTime },
}

/// A decoded header block.
#[derive(Debug)]
pub struct Block {
    pub stream: u32,
    pub end_stream: bool,
    /// The syscall that carried the first byte of the HEADERS frame.
    pub first: SegTime,
    /// The syscall that carried the last byte of the block's last frame.
    pub last: SegTime,
    pub facts: Facts,
}

/// How the first bytes of a direction are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// The client's side from its first byte: the connection preface comes first.
    ClientPreface,
    /// The server's side from its first byte.
    Fresh,
    /// Joined mid-way: frames from a syscall boundary, HPACK history unknown.
    MidStream,
}

/// Counters of one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub resyncs: u64,
    pub skipped_bytes: u64,
    /// Header blocks cut by the capture or the size limit, or malformed.
    pub damaged_blocks: u64,
    /// Fields whose name or value could not be decoded.
    pub unknown_fields: u64,
}

/// A header block being reassembled.
#[derive(Debug)]
struct Assembly {
    stream: u32,
    end_stream: bool,
    /// A PUSH_PROMISE block: decoded to keep the table in sync, then dropped.
    push: bool,
    first: SegTime,
    last: SegTime,
    /// Bytes of the block were not captured (or exceeded the limit): only a prefix is held.
    cut: bool,
}

/// What a payload read by count leads to.
#[derive(Clone, Copy, Debug)]
enum Then {
    Nothing,
    Data {
        stream: u32,
        end_stream: bool,
    },
    Reset {
        stream: u32,
        code: Option<u32>,
    },
    GoAway {
        last_stream: Option<u32>,
    },
    /// The end of a HEADERS, PUSH_PROMISE or CONTINUATION frame.
    BlockPart {
        end_headers: bool,
    },
    Settings {
        header_table_size: Option<u32>,
        max_frame_size: Option<u32>,
    },
}

#[derive(Clone, Copy, Debug)]
enum State {
    Preface,
    /// Waiting for a syscall that starts with frames.
    Lost,
    Header,
    /// The first `need` bytes of `frame`'s payload are needed before the rest.
    Prefix {
        frame: FrameHeader,
        need: usize,
        last: SegTime,
    },
    /// Header block fragment bytes, then `pad` bytes of padding.
    Fragment {
        left: u64,
        pad: u64,
        end_headers: bool,
    },
    Settings {
        left: u64,
        last: SegTime,
        header_table_size: Option<u32>,
        max_frame_size: Option<u32>,
    },
    /// `left` payload bytes to count, captured or not.
    Skip {
        left: u64,
        last: SegTime,
        then: Then,
    },
}

/// The reader of one direction.
#[derive(Debug)]
pub struct Reader {
    state: State,
    pub hpack: Decoder,
    block: Option<Assembly>,
    buf: Vec<u8>,
    /// Frames of this direction are at most this long, when known (the receiver's
    /// SETTINGS_MAX_FRAME_SIZE).
    pub max_frame: Option<u32>,
    /// Every frame of this direction has been read since the connection's start.
    pub whole_view: bool,
    pub counters: Counters,
}

pub enum Read {
    Event(Event),
    NeedMore,
}

impl Reader {
    pub fn new(start: Start) -> Self {
        let fresh = start != Start::MidStream;
        Self {
            state: match start {
                Start::ClientPreface => State::Preface,
                Start::Fresh => State::Header,
                // The first bytes may be the middle of a frame: wait for a syscall that starts
                // with frames (the one detection looked at does).
                Start::MidStream => State::Lost,
            },
            hpack: if fresh {
                Decoder::new()
            } else {
                Decoder::without_history()
            },
            block: None,
            buf: Vec::new(),
            max_frame: fresh.then_some(frame::DEFAULT_MAX_FRAME_SIZE),
            whole_view: fresh,
            counters: Counters::default(),
        }
    }

    /// Reads until something happens or the bytes run out.
    pub fn read(&mut self, stream: &mut StreamBuffer) -> Read {
        loop {
            if let Some(read) = self.step(stream) {
                return read;
            }
        }
    }

    /// One step: `None` when it made progress and nothing happened yet.
    fn step(&mut self, stream: &mut StreamBuffer) -> Option<Read> {
        match self.state {
            State::Preface => {
                let (bytes, cut) = stream.head();
                let n = bytes.len().min(PREFACE.len());
                if bytes[..n] != PREFACE[..n] || (n < PREFACE.len() && cut) {
                    return Some(self.lose(stream));
                }
                if n < PREFACE.len() {
                    return Some(Read::NeedMore);
                }
                stream.consume(PREFACE.len() as u64);
                self.state = State::Header;
                None
            }
            State::Lost => {
                let Some((captured, gap)) = stream.front_piece() else {
                    return Some(Read::NeedMore);
                };
                let bound = self.max_frame.unwrap_or(frame::DEFAULT_MAX_FRAME_SIZE);
                if stream.at_piece_start()
                    && frame::starts_frames(captured, captured.len() as u64 + gap, bound)
                {
                    self.state = State::Header;
                } else {
                    self.counters.skipped_bytes = self
                        .counters
                        .skipped_bytes
                        .saturating_add(stream.skip_piece());
                }
                None
            }
            State::Header => self.header(stream),
            State::Prefix { frame, need, last } => self.prefix(stream, frame, need, last),
            State::Fragment {
                left,
                pad,
                end_headers,
            } => self.fragment(stream, left, pad, end_headers),
            State::Settings {
                left,
                last,
                header_table_size,
                max_frame_size,
            } => {
                if left == 0 {
                    self.state = State::Header;
                    return Some(Read::Event(Event::Settings {
                        header_table_size,
                        max_frame_size,
                    }));
                }
                let (bytes, cut) = stream.head();
                if bytes.len() >= 6 {
                    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
                    let value = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]);
                    let (mut table, mut size) = (header_table_size, max_frame_size);
                    match id {
                        frame::SETTINGS_HEADER_TABLE_SIZE => table = Some(value),
                        frame::SETTINGS_MAX_FRAME_SIZE
                            if (frame::DEFAULT_MAX_FRAME_SIZE..=frame::MAX_MAX_FRAME_SIZE)
                                .contains(&value) =>
                        {
                            size = Some(value);
                        }
                        _ => {}
                    }
                    let last = stream.consume(6).unwrap_or(last);
                    self.state = State::Settings {
                        left: left - 6,
                        last,
                        header_table_size: table,
                        max_frame_size: size,
                    };
                    None
                } else if cut {
                    // The rest is not captured: what was read still holds.
                    self.state = State::Skip {
                        left,
                        last,
                        then: Then::Settings {
                            header_table_size,
                            max_frame_size,
                        },
                    };
                    None
                } else {
                    Some(Read::NeedMore)
                }
            }
            State::Skip { left, last, then } => {
                let mut last = last;
                if left > 0 {
                    let take = left.min(stream.len());
                    if take == 0 {
                        return Some(Read::NeedMore);
                    }
                    last = stream.consume(take).unwrap_or(last);
                    if take < left {
                        self.state = State::Skip {
                            left: left - take,
                            last,
                            then,
                        };
                        return Some(Read::NeedMore);
                    }
                }
                self.state = State::Header;
                self.then(then, last)
            }
        }
    }

    /// A frame header at the front.
    fn header(&mut self, stream: &mut StreamBuffer) -> Option<Read> {
        let (bytes, cut) = stream.head();
        let Some(header) = FrameHeader::parse(bytes) else {
            // A header cut by a gap will never be read.
            return Some(if cut {
                self.lose(stream)
            } else {
                Read::NeedMore
            });
        };
        let continues = self.block.as_ref().map(|b| b.stream);
        let fits = header.is_valid(self.max_frame.unwrap_or(frame::MAX_MAX_FRAME_SIZE))
            && match continues {
                // A block's frames follow each other without anything in between.
                Some(open) => header.kind == frame::CONTINUATION && header.stream == open,
                None => header.kind != frame::CONTINUATION,
            };
        if !fits {
            return Some(self.lose(stream));
        }
        let first = stream.front_time().unwrap_or_default();
        let last = stream.consume(HEADER_LEN as u64).unwrap_or(first);
        let length = u64::from(header.length);
        let skip = |then| State::Skip {
            left: length,
            last,
            then,
        };
        self.state = match header.kind {
            frame::DATA => skip(Then::Data {
                stream: header.stream,
                end_stream: header.has(frame::END_STREAM),
            }),
            frame::HEADERS | frame::PUSH_PROMISE => {
                let push = header.kind == frame::PUSH_PROMISE;
                self.start_block(header.stream, header.has(frame::END_STREAM) && !push, push);
                let block = self.block.as_mut().expect("just started");
                block.first = first;
                block.last = last;
                let need = usize::from(header.has(frame::PADDED))
                    + if push {
                        4
                    } else if header.has(frame::PRIORITY_FLAG) {
                        5
                    } else {
                        0
                    };
                State::Prefix {
                    frame: header,
                    need,
                    last,
                }
            }
            frame::CONTINUATION => State::Fragment {
                left: length,
                pad: 0,
                end_headers: header.has(frame::END_HEADERS),
            },
            frame::SETTINGS if !header.has(frame::ACK) => State::Settings {
                left: length,
                last,
                header_table_size: None,
                max_frame_size: None,
            },
            frame::RST_STREAM | frame::GOAWAY => State::Prefix {
                frame: header,
                need: if header.kind == frame::RST_STREAM {
                    4
                } else {
                    8
                },
                last,
            },
            _ => skip(Then::Nothing),
        };
        None
    }

    fn start_block(&mut self, stream: u32, end_stream: bool, push: bool) {
        self.buf.clear();
        self.block = Some(Assembly {
            stream,
            end_stream,
            push,
            first: SegTime::default(),
            last: SegTime::default(),
            cut: false,
        });
    }

    /// The first `need` payload bytes of `frame`.
    fn prefix(
        &mut self,
        stream: &mut StreamBuffer,
        frame: FrameHeader,
        need: usize,
        last: SegTime,
    ) -> Option<Read> {
        let length = u64::from(frame.length);
        let (bytes, cut) = stream.head();
        if bytes.len() < need && !cut {
            return Some(Read::NeedMore);
        }
        let bytes = (bytes.len() >= need).then(|| &bytes[..need]);
        let word =
            |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        match frame.kind {
            frame::HEADERS | frame::PUSH_PROMISE => {
                let end_headers = frame.has(frame::END_HEADERS);
                let Some(bytes) = bytes else {
                    // Not captured: nothing of this block can be read.
                    if let Some(block) = self.block.as_mut() {
                        block.cut = true;
                    }
                    self.state = State::Skip {
                        left: length,
                        last,
                        then: Then::BlockPart { end_headers },
                    };
                    return None;
                };
                let pad = if frame.has(frame::PADDED) {
                    u64::from(bytes[0])
                } else {
                    0
                };
                let Some(fragment) = (length - need as u64).checked_sub(pad) else {
                    // Padding longer than the frame: not HTTP/2 framing after all.
                    return Some(self.lose(stream));
                };
                let last = stream.consume(need as u64).unwrap_or(last);
                if let Some(block) = self.block.as_mut() {
                    block.last = last;
                }
                self.state = State::Fragment {
                    left: fragment,
                    pad,
                    end_headers,
                };
            }
            frame::RST_STREAM => {
                let code = bytes.map(|b| word(b, 0));
                self.state = State::Skip {
                    left: length,
                    last,
                    then: Then::Reset {
                        stream: frame.stream,
                        code,
                    },
                };
            }
            _ => {
                let last_stream = bytes.map(|b| word(b, 0) & 0x7fff_ffff);
                self.state = State::Skip {
                    left: length,
                    last,
                    then: Then::GoAway { last_stream },
                };
            }
        }
        None
    }

    /// Header block fragment bytes.
    fn fragment(
        &mut self,
        stream: &mut StreamBuffer,
        left: u64,
        pad: u64,
        end_headers: bool,
    ) -> Option<Read> {
        let Some(block) = self.block.as_mut() else {
            // Unreachable: fragments follow a started block. Recover as from lost framing.
            return Some(self.lose(stream));
        };
        if left == 0 {
            self.state = State::Skip {
                left: pad,
                last: block.last,
                then: Then::BlockPart { end_headers },
            };
            return None;
        }
        let (bytes, cut) = stream.head();
        let take = if !bytes.is_empty() {
            let take = (bytes.len() as u64).min(left);
            if !block.cut {
                let room = MAX_HEADER_BLOCK - self.buf.len();
                let keep = (take as usize).min(room);
                self.buf.extend_from_slice(&bytes[..keep]);
                block.cut = keep < take as usize;
            }
            take
        } else if cut {
            // Inside a gap: these bytes of the block were not captured.
            block.cut = true;
            let gap = stream.front_piece().map_or(0, |(_, gap)| gap);
            gap.min(left)
        } else {
            return Some(Read::NeedMore);
        };
        block.last = stream.consume(take).unwrap_or(block.last);
        self.state = State::Fragment {
            left: left - take,
            pad,
            end_headers,
        };
        None
    }

    /// A frame's payload has been read.
    fn then(&mut self, then: Then, last: SegTime) -> Option<Read> {
        let event = match then {
            Then::Nothing => return None,
            Then::Data { stream, end_stream } => Event::Data {
                stream,
                end_stream,
                last,
            },
            Then::Reset { stream, code } => Event::Reset { stream, code, last },
            Then::GoAway { last_stream } => Event::GoAway { last_stream, last },
            Then::Settings {
                header_table_size,
                max_frame_size,
            } => Event::Settings {
                header_table_size,
                max_frame_size,
            },
            Then::BlockPart { end_headers } => {
                if let Some(block) = self.block.as_mut() {
                    block.last = last;
                }
                if !end_headers {
                    // CONTINUATION frames follow.
                    return None;
                }
                return self.finish_block();
            }
        };
        Some(Read::Event(event))
    }

    /// Decodes the block just completed.
    fn finish_block(&mut self) -> Option<Read> {
        let block = self.block.take()?;
        let mut facts = Facts::default();
        let outcome = self
            .hpack
            .decode(&self.buf, !block.cut, |field| facts.read(field));
        facts.outcome = outcome;
        self.counters.unknown_fields += u64::from(outcome.unknown);
        self.counters.damaged_blocks += u64::from(!outcome.is_whole());
        self.buf.clear();
        if self.buf.capacity() > BLOCK_KEEP {
            self.buf.shrink_to(BLOCK_KEEP / 4);
        }
        if block.push {
            return None;
        }
        Some(Read::Event(Event::Headers(Box::new(Block {
            stream: block.stream,
            end_stream: block.end_stream,
            first: block.first,
            last: block.last,
            facts,
        }))))
    }

    /// The framing is lost here: drop the rest of this syscall and look for frames at the
    /// start of the next ones.
    fn lose(&mut self, stream: &mut StreamBuffer) -> Read {
        let at = stream
            .front_time()
            .or_else(|| stream.back_time())
            .unwrap_or_default();
        self.state = State::Lost;
        self.block = None;
        self.buf.clear();
        self.hpack.lose_history();
        self.whole_view = false;
        self.counters.resyncs += 1;
        self.counters.skipped_bytes = self
            .counters
            .skipped_bytes
            .saturating_add(stream.skip_piece());
        Read::Event(Event::Lost { at })
    }
}
