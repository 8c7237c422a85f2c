//! Dumps (every link, every route) read one datagram at a time.
//!
//! rtnetlink's connection reads whatever the socket holds as fast as it
//! can and queues every parsed message for the caller; the kernel refills
//! a dump's socket as soon as it is read, so a dump of a namespace with
//! thousands of links was parsed and held whole (tens of MB for a pod that
//! made 4,000 veths) before the first was looked at. Here the caller's
//! function sees each message as its datagram arrives, and only what it
//! keeps stays; per-link statistics are not even asked for.

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, AsyncSocket, AsyncSocketExt, SocketAddr, TokioSocket};

use super::NetlinkError;

/// A socket for dumps in the namespace it was opened in; one dump at a
/// time.
pub struct Dumper {
    socket: TokioSocket,
    seq: u32,
}

impl Dumper {
    /// Opens the socket in the calling thread's namespace, registered
    /// with the current tokio runtime.
    pub fn open() -> Result<Dumper, NetlinkError> {
        let socket_err = |source| NetlinkError::Socket {
            context: " for dumps".into(),
            source,
        };
        let mut socket = TokioSocket::new(NETLINK_ROUTE).map_err(socket_err)?;
        socket.socket_mut().bind_auto().map_err(socket_err)?;
        Ok(Dumper { socket, seq: 0 })
    }

    /// Sends `request` as a dump and gives `each` every message of the
    /// answer, in order. `op` names the dump in errors.
    pub async fn dump(
        &mut self,
        request: RouteNetlinkMessage,
        op: &str,
        mut each: impl FnMut(RouteNetlinkMessage),
    ) -> Result<(), NetlinkError> {
        let io = |source| NetlinkError::Io {
            op: op.to_string(),
            source,
        };
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = NetlinkMessage::from(request);
        msg.header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        msg.header.sequence_number = seq;
        msg.finalize();
        let mut buf = vec![0; msg.buffer_len()];
        msg.serialize(&mut buf);
        self.socket
            .send_to(&buf, &SocketAddr::new(0, 0))
            .await
            .map_err(io)?;
        loop {
            let (datagram, _) = self.socket.recv_from_full().await.map_err(io)?;
            let mut offset = 0;
            while offset < datagram.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&datagram[offset..])
                    .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
                let len = reply.header.length as usize;
                // A reply to an earlier, abandoned dump: not ours.
                if reply.header.sequence_number == seq {
                    match reply.payload {
                        NetlinkPayload::InnerMessage(m) => each(m),
                        NetlinkPayload::Done(_) => return Ok(()),
                        NetlinkPayload::Error(e) if e.code.is_some() => {
                            return Err(NetlinkError::Request {
                                op: op.to_string(),
                                source: rtnetlink::Error::NetlinkError(e),
                            })
                        }
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
            }
        }
    }
}
