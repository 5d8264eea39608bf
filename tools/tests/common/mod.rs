//! An mqttd broker in-process on 127.0.0.1:0 for the tools' tests, on its own runtime so the
//! tests can drive child processes synchronously.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use mqttd::config::Config;
use mqttd::server::Server;
use tokio_util::sync::CancellationToken;

pub struct InProcessBroker {
    pub rt: tokio::runtime::Runtime,
    /// The first listener's address.
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<()>,
}

impl InProcessBroker {
    /// One plain listener on 127.0.0.1:0, `$SYS` off, warnings only.
    pub fn start(worker_threads: usize) -> InProcessBroker {
        Self::with_listeners(worker_threads, "[[listener]]\nbind = \"127.0.0.1:0\"\n")
    }

    /// As [`InProcessBroker::start`], with these `[[listener]]` tables instead.
    pub fn with_listeners(worker_threads: usize, listeners: &str) -> InProcessBroker {
        let config = Config::parse(
            &format!(
                "{listeners}\n[sys]\ninterval = 0\n[log]\nlevel = \"warn\"\n\
                 [persistence]\nenabled = false\n"
            ),
            Path::new("in-process.toml"),
        )
        .expect("config");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .enable_all()
            .build()
            .expect("runtime");
        let shutdown = CancellationToken::new();
        let server = rt
            .block_on(Server::bind(config, shutdown.clone()))
            .expect("bind");
        let addr = server.local_addrs()[0].1;
        let handle = rt.spawn(server.run());
        InProcessBroker {
            rt,
            addr,
            shutdown,
            handle,
        }
    }

    /// Shuts the broker down and waits (at most 10 s) for it to finish.
    pub fn stop(self) {
        self.shutdown.cancel();
        self.rt
            .block_on(async { tokio::time::timeout(Duration::from_secs(10), self.handle).await })
            .expect("broker stops in time")
            .expect("broker task did not panic");
    }
}
