//! nginx from its Debian package: one worker, keep-alive, a tiny response, no access log.

use std::{os::unix::process::CommandExt, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use tracer_e2e::harness::{Proc, TempDir, free_port, wait_for_port};

pub struct Nginx {
    pub port: u16,
    _master: Proc,
    pub worker: u32,
    _dir: TempDir,
}

impl Nginx {
    pub fn start() -> Result<Self> {
        let dir = TempDir::new("bench-nginx")?;
        let port = free_port()?;
        let root = dir.path().display();
        let conf = format!(
            "worker_processes 1;\ndaemon off;\npid {root}/nginx.pid;\nerror_log {root}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  keepalive_requests 1000000;\n  keepalive_timeout 60s;\n\
               client_body_temp_path {root}/body;\n  proxy_temp_path {root}/proxy;\n\
               fastcgi_temp_path {root}/fastcgi;\n  uwsgi_temp_path {root}/uwsgi;\n  scgi_temp_path {root}/scgi;\n\
               server {{\n    listen 127.0.0.1:{port};\n    location / {{ return 200 \"ok\\n\"; }}\n  }}\n}}\n"
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf)?;
        // Its own process group: dropping it kills the worker too.
        let master = Command::new("nginx")
            .arg("-c")
            .arg(&path)
            .arg("-p")
            .arg(dir.path())
            .process_group(0)
            .spawn()
            .context("starting nginx (apt install nginx)")?;
        let master = Proc::adopt_group(master);
        wait_for_port(port, Duration::from_secs(10))?;
        let worker = worker_of(master.pid())?;
        Ok(Self {
            port,
            _master: master,
            worker,
            _dir: dir,
        })
    }

    pub fn version() -> String {
        Command::new("nginx")
            .arg("-v")
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stderr)
                    .trim()
                    .replace("nginx version: ", "")
            })
            .unwrap_or_default()
    }
}

/// The master's only child.
fn worker_of(master: u32) -> Result<u32> {
    for _ in 0..100 {
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))?;
        let pids: Vec<u32> = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        match pids.as_slice() {
            [worker] => return Ok(*worker),
            [] => std::thread::sleep(Duration::from_millis(20)),
            many => bail!("nginx has {} workers, expected one", many.len()),
        }
    }
    bail!("nginx {master} started no worker")
}
