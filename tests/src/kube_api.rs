//! Kubernetes for the end-to-end tests, where no cluster runs: a replay of the API server's
//! pod endpoints (a recorded-format pod list, then watch events the test sends when it
//! chooses), and a container cgroup like the ones containerd creates, for a real process.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        mpsc::{Receiver, Sender, channel},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};

/// Answers `GET /api/v1/pods` (the list) with a fixed body and `GET /api/v1/pods?watch=...`
/// with the event lines the test sends, as a chunked stream that stays open.
pub struct ApiReplay {
    pub port: u16,
    events: Sender<String>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl ApiReplay {
    pub fn start(pod_list: String) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let (events, events_rx) = channel::<String>();
        let events_rx = Arc::new(Mutex::new(Some(events_rx)));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (list, events, seen) = (pod_list.clone(), events_rx.clone(), seen.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &list, &events, &seen);
                });
            }
        });
        Ok(Self {
            port,
            events,
            requests,
        })
    }

    /// Sends one watch event (`{"type":"MODIFIED","object":{...}}`) to the agent's watch.
    pub fn send(&self, event: &serde_json::Value) -> Result<()> {
        self.events
            .send(event.to_string())
            .context("the watch stream is gone")
    }

    /// The request targets received so far ("/api/v1/pods?fieldSelector=...").
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// A kubeconfig that points at this replay, written in `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: replay\n\
                 clusters:\n- name: replay\n  cluster:\n    server: http://127.0.0.1:{}\n\
                 users:\n- name: agent\n  user:\n    token: replay-token\n\
                 contexts:\n- name: replay\n  context:\n    cluster: replay\n    user: agent\n",
                self.port
            ),
        )?;
        Ok(path)
    }
}

type Events = Arc<Mutex<Option<Receiver<String>>>>;

/// One connection: requests one after another; a watch keeps it to the end.
fn serve(
    mut stream: TcpStream,
    list: &str,
    events: &Events,
    seen: &Mutex<Vec<String>>,
) -> Result<()> {
    loop {
        let target = read_request_target(&mut stream)?;
        seen.lock().unwrap().push(target.clone());
        if !target.starts_with("/api/v1/pods") {
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404}"#;
            respond(&mut stream, 404, body)?;
        } else if target.contains("watch=true") || target.contains("watch=1") {
            // The first watch gets the test's events; a later one (after a timeout) waits.
            let rx = events.lock().unwrap().take();
            stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                  Transfer-Encoding: chunked\r\n\r\n",
            )?;
            match rx {
                Some(rx) => {
                    for line in rx {
                        let chunk = format!("{line}\n");
                        write!(stream, "{:x}\r\n{chunk}\r\n", chunk.len())?;
                        stream.flush()?;
                    }
                }
                None => std::thread::sleep(Duration::from_secs(3600)),
            }
            return Ok(());
        } else {
            respond(&mut stream, 200, list)?;
        }
    }
}

fn respond(stream: &mut TcpStream, code: u16, body: &str) -> Result<()> {
    write!(
        stream,
        "HTTP/1.1 {code} OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    Ok(stream.flush()?)
}

/// Reads one request head (GETs have no body) and returns its target.
fn read_request_target(stream: &mut TcpStream) -> Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            bail!("connection closed");
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let target = head
        .split_whitespace()
        .nth(1)
        .context("no request target")?;
    Ok(target.to_string())
}

/// A cgroup named the way containerd's systemd driver names a container's cgroup on a node,
/// created in this host's cgroup v2 hierarchy; a process moved into it looks, from
/// /proc/PID/cgroup, like that container's. Removed on drop (after its processes are gone).
pub struct ContainerCgroup {
    dirs: Vec<PathBuf>,
}

impl ContainerCgroup {
    pub fn create(pod_uid: &str, container_id: &str) -> Result<Self> {
        let root = cgroup2_root().context("no cgroup v2 hierarchy is mounted")?;
        let slice = format!("kubepods-besteffort-pod{}.slice", pod_uid.replace('-', "_"));
        let mut dirs = Vec::new();
        let mut dir = root;
        for component in [
            "kubepods.slice",
            "kubepods-besteffort.slice",
            &slice,
            &format!("cri-containerd-{container_id}.scope"),
        ] {
            dir = dir.join(component);
            if !dir.exists() {
                std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
            }
            dirs.push(dir.clone());
        }
        Ok(Self { dirs })
    }

    pub fn add(&self, pid: u32) -> Result<()> {
        let procs = self.procs_file();
        std::fs::write(&procs, pid.to_string())
            .with_context(|| format!("moving {pid} into {}", procs.display()))
    }

    /// Its `cgroup.procs`: a process that writes its pid there joins the container.
    pub fn procs_file(&self) -> PathBuf {
        self.dirs.last().unwrap().join("cgroup.procs")
    }
}

impl Drop for ContainerCgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            // Its processes may take a moment to be reaped after being killed.
            for _ in 0..50 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The mount point of the cgroup v2 hierarchy's root (/sys/fs/cgroup, or
/// /sys/fs/cgroup/unified on hybrid hosts).
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        (right.starts_with("cgroup2 ") && !Path::new(point).join("cgroup.type").exists())
            .then(|| PathBuf::from(point))
    })
}
