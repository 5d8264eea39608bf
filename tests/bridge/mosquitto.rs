//! A real Mosquitto (Debian `mosquitto`, `/usr/sbin/mosquitto` 2.x) on a loopback port, with a
//! configuration file the test writes. Absent Mosquitto fails the test (never skips it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::common::{ChildGuard, WAIT};

pub struct Mosquitto {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<ChildGuard>,
    extra: String,
}

fn program() -> PathBuf {
    let installed = Path::new("/usr/sbin/mosquitto");
    if installed.exists() {
        return installed.to_owned();
    }
    // Elsewhere on PATH (another distribution); missing: the spawn below fails the test.
    PathBuf::from("mosquitto")
}

/// A free loopback port (bound and released: Mosquitto takes it next, or the caller retries).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

impl Mosquitto {
    /// Starts Mosquitto on a free port; `extra` goes into the listener's part of the
    /// configuration (TLS files, `allow_anonymous`, `password_file`, ...).
    pub async fn start(extra: &str) -> Mosquitto {
        for _ in 0..5 {
            let mut m = Mosquitto::configured(free_port(), extra);
            if m.launch().await {
                return m;
            }
        }
        panic!("mosquitto did not start on any of five free ports");
    }

    /// Starts Mosquitto on `port` (a restart, or a port already in a bridge's configuration).
    pub async fn start_on(port: u16, extra: &str) -> Mosquitto {
        let mut m = Mosquitto::configured(port, extra);
        assert!(
            m.launch().await,
            "mosquitto did not start on port {port}: {}",
            m.log()
        );
        m
    }

    /// Configured and not started.
    pub fn configured(port: u16, extra: &str) -> Mosquitto {
        Mosquitto {
            port,
            dir: tempfile::TempDir::new().expect("temp dir"),
            child: None,
            extra: extra.to_owned(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What Mosquitto logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("mosquitto.log")).unwrap_or_default()
    }

    /// Starts the process with the configuration (again, after [`Mosquitto::stop`]: the
    /// persistence file in its directory is kept). False: the port was taken.
    pub async fn launch(&mut self) -> bool {
        let conf = self.path("mosquitto.conf");
        let text = format!(
            "user root\npersistence true\npersistence_location {dir}/\nautosave_interval 1\n\
             log_dest file {dir}/mosquitto.log\nlog_type all\n\
             listener {port} 127.0.0.1\n{extra}\n",
            dir = self.dir.path().display(),
            port = self.port,
            extra = if self.extra.contains("allow_anonymous") {
                self.extra.clone()
            } else {
                format!("allow_anonymous true\n{}", self.extra)
            },
        );
        std::fs::write(&conf, text).expect("write mosquitto.conf");
        let child = Command::new(program())
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run mosquitto (Debian package `mosquitto`): {e}"));
        let mut child = ChildGuard(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(Some(_)) = child.0.try_wait() {
                return false; // the port was taken (or the configuration is wrong: see log())
            }
            if tokio::net::TcpStream::connect(self.addr()).await.is_ok() {
                self.child = Some(child);
                return true;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "mosquitto did not listen in time: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM (Mosquitto saves its persistence file) and waits until it is gone.
    pub async fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = libc::pid_t::try_from(child.0.id()).expect("pid fits");
        // SAFETY: kill(2) with the pid of our own, not yet reaped, child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = tokio::time::Instant::now() + WAIT;
        while child.0.try_wait().expect("try_wait").is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "mosquitto did not stop"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A password file for Mosquitto with `user`:`password`, made by `mosquitto_passwd`.
pub fn password_file(dir: &Path, user: &str, password: &str) -> PathBuf {
    let path = dir.join("passwd");
    let out = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg("-c")
        .arg(&path)
        .arg(user)
        .arg(password)
        .output()
        .expect("run mosquitto_passwd (Debian package `mosquitto`)");
    assert!(out.status.success(), "mosquitto_passwd: {out:?}");
    path
}
