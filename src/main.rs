fn main() {
    std::process::exit(mtuvisor::cli::main());
}
