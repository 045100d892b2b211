//! Live control: the request/response protocol of the control socket, the control plane
//! that plans each request without I/O, and the server in xvsd that carries plans out.

pub mod explain;
pub mod model;
pub mod pcapng;
pub mod plane;
pub use xvs_proto as proto;
pub mod server;
