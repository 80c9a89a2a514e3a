//! `masq`: the command line. Subcommands live in their own modules.

fn main() {
    println!("masq: not yet available");
}
