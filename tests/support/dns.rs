//! A DNS server for tests, in the test process: answers A queries for one name from a list the
//! test changes at will (NXDOMAIN for other names or when told so; silence when told so).
//! Hand-rolled on a UDP socket (hickory-proto encodes the messages): a test needs one name and
//! three behaviours, not a zone file.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::A;
use hickory_resolver::proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// What the server does with queries for its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// These addresses (A records, TTL 0); AAAA queries get an empty NOERROR answer.
    Addrs(Vec<Ipv4Addr>),
    /// NXDOMAIN.
    NoSuchName,
    /// No reply at all (a dead server).
    Silent,
}

pub struct DnsServer {
    pub addr: SocketAddr,
    pub name: String,
    answer: Arc<Mutex<Answer>>,
    task: JoinHandle<()>,
}

impl DnsServer {
    /// Serves `name` (without a trailing dot) on a UDP port of 127.0.0.1.
    pub async fn start(name: &str, answer: Answer) -> DnsServer {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind dns");
        let addr = socket.local_addr().expect("dns addr");
        let answer = Arc::new(Mutex::new(answer));
        let task = tokio::spawn(serve(socket, format!("{name}."), answer.clone()));
        DnsServer {
            addr,
            name: name.to_string(),
            answer,
            task,
        }
    }

    pub fn set(&self, answer: Answer) {
        *self.answer.lock().expect("answer lock") = answer;
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: UdpSocket, name: String, answer: Arc<Mutex<Answer>>) {
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let Ok(query) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let current = answer.lock().expect("answer lock").clone();
        if current == Answer::Silent {
            continue;
        }
        let mut reply = Message::response(query.metadata.id, query.metadata.op_code);
        reply.metadata.message_type = MessageType::Response;
        reply.metadata.recursion_desired = query.metadata.recursion_desired;
        reply.metadata.recursion_available = true;
        reply.metadata.authoritative = true;
        let Some(q) = query.queries.first().cloned() else {
            continue;
        };
        let ours = q.name().to_ascii().eq_ignore_ascii_case(&name);
        reply.add_query(q.clone());
        match (&current, ours) {
            (Answer::Addrs(addrs), true) => {
                if q.query_type() == RecordType::A {
                    for ip in addrs {
                        reply.add_answer(Record::from_rdata(q.name().clone(), 0, RData::A(A(*ip))));
                    }
                }
            }
            _ => reply.metadata.response_code = ResponseCode::NXDomain,
        }
        if let Ok(bytes) = reply.to_vec() {
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}
