//! The `webrep` binary: parse the command line, load and validate configuration, run.
//! Exit status: 0 success, 64 configuration error, 1 runtime failure.

use std::io::BufRead as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser as _;
use webrep::cli::{Cli, Command, ConfigCommand};
use webrep::config::{Config, RawConfig, raw};

const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Proxy { config } => {
            let config = match Config::load(config.as_deref()) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            webrep::telemetry::init(&config.log.level, config.log.format);
            // Worker 0 runs on this thread; `Proxy::run` starts one more single-threaded
            // runtime per further worker.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(webrep::proxy::MAX_BLOCKING_THREADS)
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(anyhow::Error::new(e).context("cannot start the runtime")),
            };
            match rt.block_on(run_proxy(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Config {
            command: ConfigCommand::PrintDefault,
        } => match raw::to_yaml_string(&RawConfig::default()) {
            Ok(s) => {
                print!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(anyhow::anyhow!(e)),
        },
        Command::Config {
            command: ConfigCommand::Check { file },
        } => match Config::load(Some(&file)) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => config_error(&e),
        },
        Command::Url { url, json } => {
            let mut out = Vec::new();
            let code = webrep::canon::url_command(&url, json, &mut out);
            let text = String::from_utf8_lossy(&out);
            if code == 0 {
                print!("{text}");
            } else {
                eprint!("{text}");
            }
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Command::Policy {
            command: webrep::cli::PolicyCommand::Check { files },
        } => {
            let code = webrep::policy::check_command(
                &files,
                &mut std::io::stdout().lock(),
                &mut std::io::stderr().lock(),
            );
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Command::Passwd { name } => {
            if name.is_empty() || name.contains(':') || name.contains(char::is_whitespace) {
                eprintln!("error: a user name must be non-empty, without ':' or spaces");
                return ExitCode::from(EX_USAGE);
            }
            let mut line = String::new();
            if std::io::stdin().lock().read_line(&mut line).is_err() {
                eprintln!("error: cannot read the password from standard input");
                return ExitCode::from(EX_USAGE);
            }
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                eprintln!("error: empty password (give it on standard input)");
                return ExitCode::from(EX_USAGE);
            }
            match webrep::proxy::auth::hash_password(password) {
                Ok(h) => {
                    println!("{name}:{h}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(anyhow::anyhow!(e)),
            }
        }
    }
}

async fn run_proxy(config: Config) -> anyhow::Result<()> {
    let access_log = Arc::new(webrep::accesslog::AccessLog::open(&config.access_log)?);
    let proxy = webrep::proxy::Proxy::bind(&config, access_log).await?;
    let shutdown = webrep::shutdown::on_signals()?;
    proxy.run(shutdown).await;
    Ok(())
}

fn config_error(e: &webrep::config::ConfigError) -> ExitCode {
    eprintln!("error: {}", chain(e));
    ExitCode::from(EX_USAGE)
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
