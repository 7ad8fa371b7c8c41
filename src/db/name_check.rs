//! Checks that the database server at an address holds a certificate for the database's real name.
//!
//! Reached by address, sqlx can verify only the certificate chain (`verify-ca`): it would check the
//! name against the address it dialled, and RDS certificates name the endpoint, never an address. So
//! before an address is used, a TLS handshake of opsrelay's own, with the server name set to the real
//! host, verifies the chain and the name. An address that serves another name (an address reused by
//! another instance after a failover or a replacement) is then set aside like one that refuses.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const PG_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
/// MySQL's SSLRequest packet, sent after the server's greeting (sequence 1): capabilities
/// LONG_PASSWORD | PROTOCOL_41 | SSL | SECURE_CONNECTION, a 16 MiB packet limit, utf8mb4, then 23
/// zero bytes.
const MYSQL_SSL_REQUEST: [u8; 36] = [
    32, 0, 0, 1, // header: payload length 32, sequence 1
    0x01, 0x8a, 0, 0, // capability flags
    0, 0, 0, 1,  // max packet size
    45, // character set
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];
/// The largest MySQL greeting read before the SSLRequest.
const MAX_GREETING: usize = 64 * 1024;

/// How the server is asked to start TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Postgres,
    MySql,
}

/// A handshake that verifies the chain against a CA bundle and the certificate's name.
#[derive(Clone)]
pub struct NameCheck {
    host: String,
    name: ServerName<'static>,
    protocol: Protocol,
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for NameCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NameCheck")
            .field("host", &self.host)
            .field("protocol", &self.protocol)
            .finish()
    }
}

impl NameCheck {
    /// Checks for `host` over `protocol`, against the PEM bundle `ca_file`.
    pub fn new(host: &str, protocol: Protocol, ca_file: &Path) -> Result<Self, String> {
        let unreadable = |e: &dyn std::fmt::Display| {
            format!(
                "OPSRELAY_DB_CA_FILE {} cannot be read as a PEM bundle ({e}): set it to the CA bundle (on RDS, the region's bundle)",
                ca_file.display()
            )
        };
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| unreadable(&e))? {
            let cert = cert.map_err(|e| unreadable(&e))?;
            roots.add(cert).map_err(|e| unreadable(&e))?;
        }
        let config = crate::tls::client_config(roots);
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| format!("the database host {host:?} is not a TLS server name: {e}"))?;
        Ok(Self {
            host: host.to_string(),
            name,
            protocol,
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Asks the server at `target` for TLS and verifies its certificate: the chain against the CA
    /// bundle, and the name against the real host. Gives up after `timeout`.
    pub async fn verify(&self, target: SocketAddr, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.handshake(target)).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "{target} did not finish a TLS handshake within {} ms",
                timeout.as_millis()
            )),
        }
    }

    async fn handshake(&self, target: SocketAddr) -> Result<(), String> {
        let failed = |e: std::io::Error| format!("TLS request to {target} failed: {e}");
        let mut tcp = TcpStream::connect(target).await.map_err(failed)?;
        match self.protocol {
            Protocol::Postgres => {
                tcp.write_all(&PG_SSL_REQUEST).await.map_err(failed)?;
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).await.map_err(failed)?;
                if answer[0] != b'S' {
                    return Err(format!("{target} does not offer TLS"));
                }
            }
            Protocol::MySql => {
                let mut header = [0u8; 4];
                tcp.read_exact(&mut header).await.map_err(failed)?;
                let length = usize::from(header[0])
                    | usize::from(header[1]) << 8
                    | usize::from(header[2]) << 16;
                if length > MAX_GREETING {
                    return Err(format!("{target} sent a {length}-byte greeting"));
                }
                let mut greeting = vec![0u8; length];
                tcp.read_exact(&mut greeting).await.map_err(failed)?;
                if greeting.first() == Some(&0xff) {
                    let message = String::from_utf8_lossy(greeting.get(3..).unwrap_or_default());
                    return Err(format!("{target} refused the connection: {message}"));
                }
                tcp.write_all(&MYSQL_SSL_REQUEST).await.map_err(failed)?;
            }
        }
        self.tls
            .connect(self.name.clone(), tcp)
            .await
            .map(drop)
            .map_err(|e| {
                format!(
                    "{target} holds no certificate valid for {} from the CA bundle: {e}",
                    self.host
                )
            })
    }
}
