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
    write_header(&dir, bindings, "bgjob.h", SECTIONS);

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
    write_header(&dir, bindings, "virjob.h", &[]);
}

/// The header's sections: each title goes above the doc comment of the item
/// named (a function, or the first constant), in the order src/ffi/mod.rs
/// declares the modules. cbindgen has no section markers of its own; a name
/// missing here, or out of order, fails the build.
const SECTIONS: &[(&str, &str)] = &[
    ("BGJOB_ABI_VERSION", "Constants and types"),
    ("bgjob_job_options_init", "Create and run"),
    ("bgjob_job_get_info", "Read: info, state, lists"),
    (
        "bgjob_job_cancel",
        "Control: cancel, pause, resume, wait, destroy, detach",
    ),
    ("bgjob_context_create", "Completion contexts"),
    (
        "bgjob_job_check_cancel",
        "Worker side: checks, progress, error, outcome",
    ),
    (
        "bgjob_job_add_stat",
        "Statistics: declare, set, read with the snapshot",
    ),
    ("bgjob_job_set_result", "Results"),
    (
        "bgjob_job_add_cancel_hook",
        "Cancellation and waits: hooks, sleep, wake fd, fd waits, deadlines",
    ),
    ("bgjob_child_options_init", "Child processes"),
    (
        "bgjob_job_finalize",
        "QEMU semantics: finalize, internal pause, error policy",
    ),
    ("bgjob_txn_create", "Transactions"),
    ("bgjob_pool_set_max_running", "Worker pool"),
    (
        "bgjob_version",
        "Library: versions, result texts, log callback",
    ),
];

/// Puts each section title above its first item's doc comment.
fn add_sections(text: &str, sections: &[(&str, &str)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut last = 0;
    for (item, title) in sections {
        let define = format!("#define {item} ");
        let (call, ptr_call) = (format!(" {item}("), format!("*{item}("));
        let at = lines
            .iter()
            .position(|l| {
                l.starts_with(&define)
                    || (!l.starts_with(' ')
                        && !l.starts_with('/')
                        && (l.contains(&call) || l.contains(&ptr_call)))
            })
            .unwrap_or_else(|| panic!("build.rs SECTIONS: {item} is not in the header"));
        // Titles go in from the top, so each must come after the last one: a
        // module order rustfmt or an edit scrambled fails here.
        assert!(
            at > last,
            "build.rs SECTIONS: {item} is out of the header's order"
        );
        last = at + 2;
        let start = lines[..at]
            .iter()
            .rposition(|l| l == "/**")
            .filter(|&s| {
                lines[s..at]
                    .iter()
                    .all(|l| l.starts_with(" *") || l == "/**")
            })
            .unwrap_or(at);
        let bar = "-".repeat(4);
        lines.insert(start, String::new());
        lines.insert(start, format!("/* {bar} {title} {bar} */"));
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// Writes `include/<name>`, only when it changed, so builds stay no-ops.
fn write_header(
    dir: &std::path::Path,
    bindings: cbindgen::Bindings,
    name: &str,
    sections: &[(&str, &str)],
) {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join(name);
    bindings.write_to_file(&out);
    let mut generated = std::fs::read(&out).expect("just written");
    if !sections.is_empty() {
        let text = String::from_utf8(generated).expect("cbindgen writes UTF-8");
        generated = add_sections(&text, sections).into_bytes();
    }
    let committed = dir.join("include").join(name);
    if std::fs::read(&committed).ok().as_deref() != Some(&generated[..]) {
        std::fs::create_dir_all(committed.parent().expect("has a parent"))
            .expect("include/ can be made");
        std::fs::write(&committed, &generated).expect("the header can be written");
    }
}
