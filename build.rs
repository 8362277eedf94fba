//! Sets the shared library's SONAME and generates `include/bgjob.h` and
//! `include/virjob.h` with the
//! pinned cbindgen. The header is committed; `make check-header` fails when the
//! committed copy differs from what this writes.

use std::path::PathBuf;

/// The SONAME's number; equals `BGJOB_ABI_VERSION` in `src/ffi/types.rs`.
const ABI: &str = "0";

fn main() {
    println!("cargo:rerun-if-changed=src/ffi");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libbgjob.so.{ABI}");

    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mut config =
        cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml is valid");
    let v = |k: &str| std::env::var(k).expect("cargo sets the version variables");
    config.after_includes = Some(format!(
        "\n#define BGJOB_VERSION_MAJOR {}\n#define BGJOB_VERSION_MINOR {}\n\
         #define BGJOB_VERSION_PATCH {}\n#define BGJOB_VERSION_STRING \"{}\"\n",
        v("CARGO_PKG_VERSION_MAJOR"),
        v("CARGO_PKG_VERSION_MINOR"),
        v("CARGO_PKG_VERSION_PATCH"),
        v("CARGO_PKG_VERSION"),
    ));
    let bindings = cbindgen::Builder::new()
        .with_crate(&dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header");
    write_header(&dir, bindings, "bgjob.h");

    // The virJob layer's header comes from its own module (its types, then
    // its functions), with its own config (the libvirt type block lives there).
    println!("cargo:rerun-if-changed=cbindgen-virjob.toml");
    let config = cbindgen::Config::from_file(dir.join("cbindgen-virjob.toml"))
        .expect("cbindgen-virjob.toml is valid");
    let bindings = cbindgen::Builder::new()
        .with_src(dir.join("src").join("ffi").join("virjob").join("types.rs"))
        .with_src(dir.join("src").join("ffi").join("virjob").join("mod.rs"))
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate virjob.h");
    write_header(&dir, bindings, "virjob.h");
}

/// Writes `include/<name>`, only when it changed, so builds stay no-ops.
fn write_header(dir: &std::path::Path, bindings: cbindgen::Bindings, name: &str) {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join(name);
    bindings.write_to_file(&out);
    let generated = std::fs::read(&out).expect("just written");
    let committed = dir.join("include").join(name);
    if std::fs::read(&committed).ok().as_deref() != Some(&generated[..]) {
        std::fs::create_dir_all(committed.parent().expect("has a parent"))
            .expect("include/ can be made");
        std::fs::write(&committed, &generated).expect("the header can be written");
    }
}
