//! Live control: the request/response protocol of the control socket, and the server in
//! xvsd that applies requests all-or-nothing.

pub mod proto;
pub mod server;
