//! The `webrep` binary: parse the command line, load and validate configuration, run.
//! Exit status: 0 success, 64 configuration error, 1 runtime failure.

use std::io::BufRead as _;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser as _;
use webrep::cli::{CaCommand, Cli, Command, ConfigCommand};
use webrep::config::{Config, RawConfig, raw};

const EX_USAGE: u8 = 64;

/// jemalloc instead of the system allocator: it gives freed memory back to the system (a
/// background thread purges what stayed unused for a few seconds), where glibc's malloc kept
/// it in per-thread arenas and the resident set of a long-lived proxy ratcheted up with each
/// wave of connections (`bench/memory.sh`, `docs/performance.md`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Without it jemalloc purges only when the process allocates, and an idle proxy would
    // keep what a burst of connections left behind.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
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
        Command::Server { config } => {
            let config_path = config;
            let config = match Config::load(config_path.as_deref()) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            webrep::telemetry::init(&config.log.level, config.log.format);
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(anyhow::Error::new(e).context("cannot start the runtime")),
            };
            let result = rt.block_on(async {
                let shutdown = webrep::shutdown::on_signals()?;
                webrep::repserver::server::run(&config.server, config_path.as_deref(), shutdown)
                    .await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Import {
            server,
            store,
            format,
            feed,
            category,
            score,
            file,
        } => {
            let args = webrep::repserver::commands::ImportArgs {
                format,
                feed,
                category,
                score,
                file,
            };
            client_command(async move {
                webrep::repserver::commands::import(&server, store.as_deref(), args).await
            })
        }
        Command::Lookup {
            server,
            host,
            json,
            items,
        } => client_command(async move {
            webrep::repserver::commands::lookup(&server, host, json, &items).await
        }),
        Command::Feedback { command } => {
            client_command(async move { webrep::repserver::commands::feedback(command).await })
        }
        Command::Ca { command } => ca_command(command),
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

fn ca_command(command: CaCommand) -> ExitCode {
    use webrep::intercept::ca;
    match command {
        CaCommand::Init { dir, force, permit } => {
            let opts = ca::InitOptions {
                force,
                permitted_dns: permit,
                common_name: None,
            };
            match ca::init(&dir, &opts) {
                Ok(c) => {
                    println!(
                        "created {} and {} (mode 0600)\nSHA-256 fingerprint: {}\nnext: `webrep ca show --dir {}` explains how clients trust it",
                        dir.join(ca::CERT_FILE).display(),
                        dir.join(ca::KEY_FILE).display(),
                        c.fingerprint(),
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e @ ca::CaError::Exists(_)) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EX_USAGE)
                }
                Err(e) => fail(anyhow::Error::new(e)),
            }
        }
        CaCommand::Show { dir } => match ca::load(&dir) {
            Ok(c) => {
                print!("{}", ca::describe(&c));
                ExitCode::SUCCESS
            }
            Err(e) => fail(anyhow::Error::new(e)),
        },
    }
}

/// Runs a client command on a small runtime; prints its error and maps it to an exit code.
fn client_command(
    f: impl std::future::Future<Output = Result<(), webrep::repserver::commands::CommandError>>,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(anyhow::Error::new(e).context("cannot start the runtime")),
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}

fn config_error(e: &webrep::config::ConfigError) -> ExitCode {
    eprintln!("error: {}", webrep::repserver::client::chain(e));
    ExitCode::from(EX_USAGE)
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::FAILURE
}
