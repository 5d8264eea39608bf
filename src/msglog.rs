//! The message logger: `[MSG] Topic: ...` / `Payload: ...` for every accepted PUBLISH.
