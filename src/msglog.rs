//! The message logger: `[MSG] Topic: ...` / `Payload: ...` for every accepted PUBLISH.
//! (Placeholder with the final API; the real writer thread lands with the ACL branch.)

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

pub struct MessageLogger {
    sink: Mutex<Box<dyn Write + Send>>,
}

impl std::fmt::Debug for MessageLogger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MessageLogger")
    }
}

impl MessageLogger {
    pub fn start(sink: Box<dyn Write + Send>) -> MessageLogger {
        MessageLogger {
            sink: Mutex::new(sink),
        }
    }
    pub fn log(&self, topic: &Arc<str>, payload: &Bytes) {
        let mut sink = self.sink.lock();
        let _ = writeln!(
            sink,
            "[MSG] Topic: {topic}\nPayload: {}",
            String::from_utf8_lossy(payload)
        );
    }
    pub fn close(self) {
        let _ = self.sink.lock().flush();
    }
    pub fn stdout() -> Box<dyn Write + Send> {
        Box::new(std::io::stdout())
    }
    pub fn open_file(path: &Path) -> std::io::Result<Box<dyn Write + Send>> {
        Ok(Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?,
        ))
    }
}
