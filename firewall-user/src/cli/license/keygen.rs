//! `smf-firewall license keygen --out DIR`.

use std::{
    fs::{self, DirBuilder, OpenOptions},
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context as _;
use firewall_grants::SigningKey;

/// The signing key's file name in DIR.
pub const PRIVATE: &str = "grant-signing.key";
/// The public key's file name in DIR.
pub const PUBLIC: &str = "grant-signing.pub";

/// Write a new Ed25519 key pair for signing grants.
///
/// DIR/grant-signing.key (PKCS#8 PEM, mode
/// 0600: keep it on the provider's side) and DIR/grant-signing.pub (SubjectPublicKeyInfo
/// PEM: list it in the adapters' `license.keys`). Prints the key id. Never overwrites a key.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The directory to write the two files in (made, mode 0700, if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

impl Args {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.out)
            .with_context(|| format!("cannot make {}", self.out.display()))?;
        let (private, public) = (self.out.join(PRIVATE), self.out.join(PUBLIC));
        for path in [&private, &public] {
            anyhow::ensure!(
                !path.exists(),
                "{} exists; a key is never overwritten: choose another --out (rotation: a new directory)",
                path.display()
            );
        }
        let key = SigningKey::generate();
        write_new(&private, key.to_pem().as_bytes(), 0o600)?;
        write_new(&public, key.public().to_pem().as_bytes(), 0o644)?;
        println!("key id {}", key.id());
        println!("signing key {} (keep it secret)", private.display());
        println!(
            "public key  {} (for the adapters' license.keys)",
            public.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
    if let Err(error) = written {
        let _ = fs::remove_file(path);
        return Err(error).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
}
