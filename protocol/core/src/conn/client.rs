//! The client side of a connection: `ClientConn`.
