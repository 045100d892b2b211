//! xvsd: the xvs daemon (see the README).
fn main() {
    eprintln!("xvsd: not yet");
    std::process::exit(1);
}
