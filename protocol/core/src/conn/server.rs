//! The server side of a connection: `ServerConn`.
