// SPDX-License-Identifier: LGPL-2.1-or-later
//! Generates the C header with cbindgen into OUT_DIR on every build; with
//! QED_L2_CACHE_UPDATE_HEADER=1 it also writes include/qed_l2_cache.h, the
//! committed copy (a test fails when that copy is stale).
//!
//! No soname here: `cargo build` makes a plain `libqed_l2_cache.so` that a C
//! program links with `-lqed_l2_cache`; the installed library, with its
//! soname and symbol versions, is linked by meson (meson.build).

use std::env;
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let header = out_dir.join("qed_l2_cache.h");
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed to generate the header")
        .write_to_file(&header);
    if env::var_os("QED_L2_CACHE_UPDATE_HEADER").is_some_and(|v| v == "1") {
        std::fs::copy(&header, crate_dir.join("include/qed_l2_cache.h"))
            .expect("write include/qed_l2_cache.h");
    }
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=QED_L2_CACHE_UPDATE_HEADER");
}
