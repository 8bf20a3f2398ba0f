//! HTTP plumbing shared by the controller's endpoints: the accept loop (TCP_NODELAY on
//! every socket, HTTP/1.1 and HTTP/2, per-address and idle bounds, graceful drain), body
//! limits, JSON and error replies.

mod activity;
pub mod open_files;
mod per_address;
mod reply;
mod server;

pub use reply::{BodyError, BoxError, ResponseBody, empty, error_json, json, read_body_limited, text};
pub use server::{ConnectionLimits, Handler, PeerAddr, serve};

pub mod server_future {
    pub use super::server::HandlerFuture;
}
