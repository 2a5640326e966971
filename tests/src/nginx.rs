//! nginx from its Debian package as a traced server: one process (no master), in a
//! directory of its own, on a free port of 127.0.0.1.

use std::{process::Command, time::Duration};

use anyhow::{Context, Result};

use crate::harness::{Proc, TempDir, free_port, wait_for_port};

pub struct Nginx {
    pub port: u16,
    /// The serving process itself (`master_process off`): the pid to trace.
    pub proc: Proc,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx with `http` directives in its `http` block and `server` directives in its
    /// one server block (after `listen`). `prepare` may fill the directory first (a web root).
    pub fn start(
        http: &str,
        server: &str,
        prepare: impl FnOnce(&std::path::Path) -> Result<()>,
    ) -> Result<Self> {
        let dir = TempDir::new("nginx")?;
        prepare(dir.path())?;
        let port = free_port()?;
        let conf = format!(
            "daemon off; master_process off; worker_processes 1;\n\
             error_log {d}/error.log; pid {d}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; {http}\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               server {{ listen 127.0.0.1:{port}; {server} }} }}\n",
            d = dir.path().display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let proc = Proc::spawn(
            Command::new("nginx")
                .arg("-c")
                .arg(&conf_path)
                .arg("-p")
                .arg(dir.path()),
        )
        .context("starting nginx (apt install nginx)")?;
        wait_for_port(port, Duration::from_secs(10)).with_context(|| {
            std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default()
        })?;
        Ok(Self { port, proc, dir })
    }

    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `nginx/1.22.1`, or empty.
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
