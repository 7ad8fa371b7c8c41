//! A DNS server for the tests, on a loopback UDP port, whose behaviour is switched mid-test: answer
//! with given addresses, drop every query (a black hole: the client times out), SERVFAIL or NXDOMAIN.

#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

/// How the server answers.
#[derive(Clone, Debug)]
pub enum DnsMode {
    /// A records with these addresses (TTL 0, so every lookup asks again).
    Answer(Vec<Ipv4Addr>),
    /// A records with a TTL of 300 s, so the resolver's cache answers after the first lookup.
    Cacheable(Vec<Ipv4Addr>),
    /// No answer at all.
    Drop,
    ServFail,
    NxDomain,
}

/// The running server.
#[derive(Clone)]
pub struct DnsServer {
    pub address: SocketAddr,
    mode: Arc<Mutex<DnsMode>>,
    queries: Arc<AtomicUsize>,
}

impl DnsServer {
    pub async fn start(mode: DnsMode) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = Self {
            address: socket.local_addr().unwrap(),
            mode: Arc::new(Mutex::new(mode)),
            queries: Arc::default(),
        };
        let state = server.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 4096];
            while let Ok((n, from)) = socket.recv_from(&mut buffer).await {
                state.queries.fetch_add(1, Ordering::SeqCst);
                let Ok(query) = Message::from_vec(&buffer[..n]) else {
                    continue;
                };
                let mode = state.mode.lock().unwrap().clone();
                if let Some(reply) = answer(&query, &mode) {
                    let _ = socket.send_to(&reply, from).await;
                }
            }
        });
        server
    }

    /// Switches how the server answers from now on.
    pub fn set(&self, mode: DnsMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Queries received so far.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

fn answer(query: &Message, mode: &DnsMode) -> Option<Vec<u8>> {
    let id = query.metadata.id;
    let op = query.metadata.op_code;
    let mut reply = match mode {
        DnsMode::Drop => return None,
        DnsMode::ServFail => Message::error_msg(id, op, ResponseCode::ServFail),
        DnsMode::NxDomain => Message::error_msg(id, op, ResponseCode::NXDomain),
        DnsMode::Answer(addresses) | DnsMode::Cacheable(addresses) => {
            let ttl = if matches!(mode, DnsMode::Cacheable(_)) {
                300
            } else {
                0
            };
            let mut reply = Message::response(id, op);
            for question in &query.queries {
                if question.query_type() == RecordType::A {
                    for address in addresses {
                        reply.add_answer(Record::from_rdata(
                            question.name().clone(),
                            ttl,
                            RData::A(A(*address)),
                        ));
                    }
                }
            }
            reply
        }
    };
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    for question in &query.queries {
        reply.add_query(question.clone());
    }
    reply.to_vec().ok()
}
