//! The one rustls client set-up (aws-lc-rs, rustls' safe default protocol versions, no client
//! certificate), for the webhook client and the database's name check, each with its own roots.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

/// A TLS client configuration trusting `roots`.
pub fn client_config(roots: RootCertStore) -> ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}
