//! Certificates for end-to-end tests, made with the `openssl` command as an operator would:
//! a CA, and leaves it signs (server names as DNS/IP SANs, client identities as URI SANs).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA in a directory, issuing leaves into the same directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    ca_key: PathBuf,
}

/// A certificate and its key.
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str], cwd: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A new CA called `name`, in `dir/name/`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("pki dir");
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca-key.pem",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            &dir,
        );
        Pki {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            dir,
        }
    }

    /// Issues `stem.pem` / `stem-key.pem` with `subject` and the extension lines `ext`.
    pub fn issue(&self, stem: &str, subject: &str, ext: &str) -> Leaf {
        let ext_file = self.dir.join(format!("{stem}.ext"));
        std::fs::write(&ext_file, ext).expect("ext file");
        let (key, csr, cert) = (
            format!("{stem}-key.pem"),
            format!("{stem}.csr"),
            format!("{stem}.pem"),
        );
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                subject,
            ],
            &self.dir,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                self.ca.to_str().unwrap(),
                "-CAkey",
                self.ca_key.to_str().unwrap(),
                "-CAcreateserial",
                "-out",
                &cert,
                "-days",
                "7",
                "-extfile",
                ext_file.to_str().unwrap(),
            ],
            &self.dir,
        );
        Leaf {
            cert: self.dir.join(cert),
            key: self.dir.join(key),
        }
    }

    /// A server certificate for `127.0.0.1` and `localhost`.
    pub fn server(&self, stem: &str) -> Leaf {
        self.issue(
            stem,
            "/CN=localhost",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n\
             keyUsage=digitalSignature\n",
        )
    }

    /// A client certificate whose URI SAN is `spiffe://rtun/<tenant>/<node>` and DNS SAN
    /// `<node>`.
    pub fn client(&self, stem: &str, tenant: &str, node: &str) -> Leaf {
        self.issue(
            stem,
            &format!("/O={tenant}/CN={node}"),
            &format!(
                "subjectAltName=URI:spiffe://rtun/{tenant}/{node},DNS:{node}\n\
                 extendedKeyUsage=clientAuth\n\
                 keyUsage=digitalSignature\n"
            ),
        )
    }
}

/// The base64 SHA-256 of a certificate's SubjectPublicKeyInfo (an `spki_pins` entry), by the
/// usual openssl pipeline.
pub fn spki_pin(cert: &Path) -> String {
    let script = format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der \
         | openssl dgst -sha256 -binary | openssl enc -base64",
        cert.display()
    );
    let out = Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
