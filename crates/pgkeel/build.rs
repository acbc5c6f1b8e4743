//! Link options of the `pgkeel-proxy` executable.

fn main() {
    // Packed relative relocations (DT_RELR, glibc >= 2.36; older linkers
    // ignore the option with a warning): the loader reads a few KB instead
    // of ~400 KB of relocation entries at every start, which would
    // otherwise stay resident in every proxy.
    println!("cargo:rustc-link-arg-bin=pgkeel-proxy=-Wl,-z,pack-relative-relocs");
}
