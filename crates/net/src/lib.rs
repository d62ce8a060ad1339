//! The data path between a VM and its host's bridge: frame parsing, the
//! length-prefixed netdev stream, the network element pipeline, tap devices.

pub mod counters;
pub mod element;
pub mod frame;
pub mod framing;
pub mod handover;
pub mod isolate;
pub mod packet_socket;
pub mod site_buffer;
pub mod stage;
pub mod switch;
pub mod switch_proto;
pub mod tap;
pub mod txbuf;
