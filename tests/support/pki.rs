//! Certificates for TLS tests, written as PEM files in a temporary
//! directory: a CA, certificates it signs (for 127.0.0.1 / localhost, or
//! for other names and URI SANs, e.g. a server identity), and a
//! self-signed "rogue" certificate nobody trusts. Starts nothing.

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};

pub struct Pki {
    dir: tempfile::TempDir,
    ca: Issuer<'static, KeyPair>,
}

impl Pki {
    /// The CA (`ca.pem`), `node` and `operator` certificates for
    /// 127.0.0.1 / localhost, and `rogue` (self-signed, for localhost).
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        let pki = Pki {
            dir,
            ca: Issuer::new(ca_params, ca_key),
        };
        for name in ["node", "operator"] {
            pki.issue(name, &["localhost", "127.0.0.1"], &[]);
        }
        // A CA nobody trusts, for a peer with the wrong certificate.
        let rogue_key = KeyPair::generate().unwrap();
        let rogue = CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&rogue_key)
            .unwrap();
        pki.write("rogue", &rogue.pem(), &rogue_key);
        pki
    }

    /// `<name>.pem` / `<name>.key`: signed by the CA, for DNS names or IPs
    /// `names` and URI SANs `uris`.
    pub fn issue(&self, name: &str, names: &[&str], uris: &[&str]) {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        for uri in uris {
            let uri = (*uri).try_into().unwrap();
            params.subject_alt_names.push(SanType::URI(uri));
        }
        let cert = params.signed_by(&key, &self.ca).unwrap();
        self.write(name, &cert.pem(), &key);
    }

    fn write(&self, name: &str, pem: &str, key: &KeyPair) {
        std::fs::write(self.dir.path().join(format!("{name}.pem")), pem).unwrap();
        std::fs::write(
            self.dir.path().join(format!("{name}.key")),
            key.serialize_pem(),
        )
        .unwrap();
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.path().join(file).display().to_string()
    }

    /// Mutual-TLS flags of a node serving and dialing with `<cert>.pem`.
    pub fn flags(&self, cert: &str) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.path(&format!("{cert}.pem")),
            "--tls-key".into(),
            self.path(&format!("{cert}.key")),
            "--tls-ca".into(),
            self.path("ca.pem"),
            "--tls-client-auth".into(),
        ]
    }

    /// `flags` with the shared `node` certificate.
    pub fn node_flags(&self) -> Vec<String> {
        self.flags("node")
    }
}
