//! `ccflare-mock [--port N]`: runs the mock Anthropic upstream on 127.0.0.1 until Ctrl-C, for
//! manual testing and benchmarks. Argument parsing and glue only; the mock is the library.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use ccflare_mock::MockUpstream;
use tokio::net::TcpListener;

const USAGE: &str = "usage: ccflare-mock [--port N]";

/// Parses `--port N` or `--port=N`; `Ok(None)` means help was asked for.
fn parse_port(args: impl IntoIterator<Item = String>) -> Result<Option<u16>, String> {
    let mut port = 0;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let value = match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--port" => args.next().ok_or("--port needs a value")?,
            other => match other.strip_prefix("--port=") {
                Some(value) => value.to_owned(),
                None => return Err(format!("unexpected argument {other:?}")),
            },
        };
        port = value
            .parse()
            .map_err(|_| format!("invalid port {value:?}"))?;
    }
    Ok(Some(port))
}

#[tokio::main]
async fn main() -> ExitCode {
    let port = match parse_port(std::env::args().skip(1)) {
        Ok(Some(port)) => port,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("ccflare-mock: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("ccflare-mock: binding 127.0.0.1:{port}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mock = match MockUpstream::start_on(listener).await {
        Ok(mock) => mock,
        Err(error) => {
            eprintln!("ccflare-mock: starting: {error}");
            return ExitCode::FAILURE;
        }
    };
    println!("listening on {}", mock.url());
    if let Err(error) = tokio::signal::ctrl_c().await {
        eprintln!("ccflare-mock: waiting for Ctrl-C: {error}");
        return ExitCode::FAILURE;
    }
    mock.shutdown();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Option<u16>, String> {
        parse_port(args.iter().map(|arg| (*arg).to_owned()))
    }

    #[test]
    fn parses_port_forms() {
        assert_eq!(parse(&[]), Ok(Some(0)));
        assert_eq!(parse(&["--port", "8080"]), Ok(Some(8080)));
        assert_eq!(parse(&["--port=9"]), Ok(Some(9)));
        assert_eq!(parse(&["--help"]), Ok(None));
        assert!(parse(&["--port"]).is_err());
        assert!(parse(&["--port", "x"]).is_err());
        assert!(parse(&["--verbose"]).is_err());
    }
}
