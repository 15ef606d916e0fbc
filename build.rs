//! Compiles `proto/` with tonic-prost-build, using the vendored `protoc`
//! so that a machine without protobuf-compiler still builds.
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing reads the
        // environment concurrently.
        unsafe { env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // An outcome rarely carries its message back (NOT_HERE, NO_LINK):
        // boxed, an outcome is a quarter of the size on every queue it
        // crosses.
        .boxed(".switchboard.v1.Outcome.returned")
        .file_descriptor_set_path(out.join("switchboard_descriptor.bin"))
        .compile_protos(
            &[
                "proto/switchboard/v1/relay.proto",
                "proto/switchboard/v1/admin.proto",
            ],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
