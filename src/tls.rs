//! TLS files: the listener's certificate chain and key, and the CA file HTTPS backends are
//! verified against, loaded and checked before any socket is bound (so a bad file fails `-t`
//! and start-up with a message naming the key, not a panic inside Pingora).

use std::sync::Arc;

use pingora::listeners::tls::TlsSettings;

use crate::config::TlsConfig;
use crate::BuildError;

/// The TLS listener's settings: the certificate chain and key are read and checked here
/// (PEM, key matching the leaf certificate), so a bad file fails `-t` and start-up with a
/// message naming `tls.cert` or `tls.key` instead of a panic inside Pingora. rustls with
/// TLS 1.2 and 1.3 only and its default (AEAD, forward-secret) cipher suites; ALPN offers
/// `h2` then `http/1.1`.
pub fn tls_settings(tls: &TlsConfig) -> Result<TlsSettings, BuildError> {
    use pingora::tls::sign::{CertifiedKey, SingleCertAndKey};
    use pingora::tls::{
        load_certs_and_key_files, load_pem_file_ca, load_pem_file_private_key, CryptoProvider,
    };

    let (cert, key) = (
        tls.cert.to_string_lossy().into_owned(),
        tls.key.to_string_lossy().into_owned(),
    );
    require_pem("tls.cert", &cert, "PEM certificate", load_pem_file_ca)?;
    require_pem(
        "tls.key",
        &key,
        "PEM private key (PKCS#8, PKCS#1 or SEC1)",
        load_pem_file_private_key,
    )?;
    let (chain, private_key) = match load_certs_and_key_files(&cert, &key) {
        Ok(Some(pair)) => pair,
        Ok(None) => {
            return Err(BuildError(format!(
                "tls.cert / tls.key: cannot load {cert} / {key}"
            )))
        }
        Err(e) => {
            return Err(BuildError(format!(
                "tls.cert / tls.key: cannot load {cert} / {key}: {e}"
            )))
        }
    };
    // rustls needs a process-wide crypto provider; Pingora installs ring's too, this only
    // makes sure it is there before the key is checked (a second install is a no-op).
    pingora::tls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default()
        .ok_or_else(|| BuildError("tls: no rustls crypto provider".into()))?;
    let certified = CertifiedKey::from_der(chain, private_key, provider).map_err(|e| {
        BuildError(format!(
            "tls.key: {key} cannot be used with the certificate in {cert}: {e}"
        ))
    })?;
    let mut settings = TlsSettings::intermediate(&cert, &key)
        .map_err(|e| BuildError(format!("tls: cannot load {cert} / {key}: {e}")))?;
    // Serve the chain loaded (and checked) above: Pingora does not read the files again, so
    // a file changed after the check cannot make a worker panic.
    settings.set_cert_resolver(Arc::new(SingleCertAndKey::from(certified)));
    settings.enable_h2();
    Ok(settings)
}

/// Checks that `path` (the value of config key `key`) loads with `load` and holds at least one
/// `what`, naming the key and the file when it does not.
fn require_pem(
    key: &str,
    path: &String,
    what: &str,
    load: fn(&String) -> pingora::Result<Vec<u8>>,
) -> Result<(), BuildError> {
    match load(path) {
        Err(e) => Err(BuildError(format!("{key}: cannot load {path}: {e}"))),
        Ok(der) if der.is_empty() => Err(BuildError(format!("{key}: no {what} found in {path}"))),
        Ok(_) => Ok(()),
    }
}

/// Checks Pingora's `ca_file` (the roots that HTTPS backends are verified against) loads,
/// so that a bad file fails `-t` and start-up with a message instead of a panic.
pub fn check_ca_file(ca_file: Option<&str>) -> Result<(), BuildError> {
    let Some(path) = ca_file else {
        return Ok(());
    };
    let mut roots = pingora::tls::RootCertStore::empty();
    pingora::tls::load_ca_file_into_store(path, &mut roots)
        .map_err(|e| BuildError(format!("ca_file: cannot load {path}: {e}")))?;
    if roots.is_empty() {
        return Err(BuildError(format!(
            "ca_file: no PEM certificate found in {path}"
        )));
    }
    Ok(())
}
