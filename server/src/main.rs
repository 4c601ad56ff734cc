fn main() -> std::process::ExitCode {
    moat_server::cli::main()
}
