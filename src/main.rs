//! The `webrep` binary: parse the command line, load and validate configuration, run.
//! Exit statuses follow `sysexits.h` ([`webrep::exit::Exit`], where the table is): 64 a bad
//! command line, 78 a bad configuration (at the start of `proxy` and `server` too, and an
//! invalid `RUST_LOG`), 1 a failure of no other class.

use std::process::ExitCode;

use clap::Parser as _;
use webrep::cli::{CaCommand, Cli, Command, ConfigCommand};
use webrep::config::{Config, ConfigError, RawConfig};
use webrep::exit::Exit;

/// jemalloc instead of the system allocator: it gives freed memory back to the system (a
/// background thread purges what stayed unused for a few seconds), where glibc's malloc kept
/// it in per-thread arenas and the resident set of a long-lived proxy ratcheted up with each
/// wave of connections (`bench/memory.sh`, `docs/performance.md`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (the `_RJEM_MALLOC_CONF` environment variable
/// overrides them): freed pages are returned after about 1 s unused instead of 10 s, so that
/// what a burst of connections leaves behind (hyper's buffers of connections now idle or
/// closed) leaves the resident set soon; no throughput cost was measurable
/// (`bench/quick-throughput.sh`, `docs/performance.md`).
// SAFETY: jemalloc reads this symbol once, as a `const char *` to a NUL-terminated string;
// a reference to a static byte array with its NUL is exactly that, and nothing writes it.
#[allow(unsafe_code)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 20] = b"dirty_decay_ms:1000\0";

fn main() -> ExitCode {
    // Without it jemalloc purges only when the process allocates, and an idle proxy would
    // keep what a burst of connections left behind.
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version` go to stdout and succeed; a usage error is 64, not
        // clap's 2.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage
            } else {
                Exit::Ok
            }
            .into();
        }
    };
    match cli.command {
        Command::Proxy { config } => serve(config.as_deref(), Role::Proxy),
        Command::Server { config } => serve(config.as_deref(), Role::Server),
        Command::Import {
            server,
            store,
            format,
            feed,
            category,
            score,
            file,
        } => {
            let args = webrep::app::commands::ImportArgs {
                format,
                feed,
                category,
                score,
                file,
            };
            client_command(async move {
                webrep::app::commands::import(&server, store.as_deref(), args).await
            })
        }
        Command::Lookup {
            server,
            host,
            json,
            items,
        } => client_command(async move {
            webrep::app::commands::lookup(&server, host, json, &items).await
        }),
        Command::Feedback { command } => {
            client_command(async move { webrep::app::commands::feedback(command).await })
        }
        Command::Ca { command } => ca_command(command),
        Command::Config {
            command: ConfigCommand::PrintDefault,
        } => match webrep::yaml::to_yaml_string(&RawConfig::default()) {
            Ok(s) => {
                webrep::out!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(anyhow::anyhow!(e)),
        },
        Command::Config {
            command: ConfigCommand::Check { service, file },
        } => config_check(&file, service),
        Command::Url { url, json } => url_command(url.as_deref(), json),
        Command::Policy {
            command: webrep::cli::PolicyCommand::Check { files },
        } => webrep::policyfile::check_command(
            &files,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )
        .into(),
        Command::Passwd { name } => match webrep::app::passwd::passwd(&name) {
            Ok(line) => {
                webrep::outln!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => error(e.code, &e.message),
        },
        Command::Generate { command } => generate_command(command),
    }
}

/// `webrep url [URL|-]`: the argument's raw bytes, or each line of standard input.
fn url_command(url: Option<&std::ffi::OsStr>, json: bool) -> ExitCode {
    use std::os::unix::ffi::OsStrExt as _;
    match url.filter(|u| *u != "-") {
        Some(url) => {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = webrep::canon::url_command(url.as_bytes(), json, &mut out, &mut err);
            webrep::out!("{}", String::from_utf8_lossy(&out));
            webrep::err!("{}", String::from_utf8_lossy(&err));
            code.into()
        }
        None => webrep::canon::url_lines(
            std::io::stdin().lock(),
            json,
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        )
        .into(),
    }
}

/// `webrep generate man DIR` and `webrep generate completions SHELL`.
fn generate_command(command: webrep::cli::GenerateCommand) -> ExitCode {
    use webrep::app::generate;
    match command {
        webrep::cli::GenerateCommand::Man { dir } => match generate::man_pages(&dir) {
            Ok(pages) => {
                for page in pages {
                    webrep::outln!("{}", page.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        webrep::cli::GenerateCommand::Completions { shell } => {
            webrep::out!("{}", String::from_utf8_lossy(&generate::completions(shell)));
            ExitCode::SUCCESS
        }
    }
}

/// `webrep config check FILE`: every problem of the file and of what it names, or `ok`.
fn config_check(file: &std::path::Path, only: Option<webrep::cli::Service>) -> ExitCode {
    use webrep::cli::Service;
    match webrep::app::check::check_config(file, only) {
        Err(e) => error(Exit::NoInput, &format!("cannot read config file {e}")),
        Ok(report) if report.problems.is_empty() => {
            let services: Vec<&str> = report
                .services
                .iter()
                .map(|s| match s {
                    Service::Proxy => "proxy",
                    Service::Server => "server",
                })
                .collect();
            webrep::outln!(
                "{}: ok (checked for webrep {})",
                file.display(),
                services.join(" and webrep ")
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            for p in &report.problems {
                webrep::errln!("{p}");
            }
            Exit::Config.into()
        }
    }
}

/// What [`serve`] runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Proxy,
    Server,
}

/// `webrep proxy` and `webrep server`: load the config, start diagnostics and a runtime, run
/// until a signal, then stop the runtime without waiting long for blocking work.
fn serve(config_path: Option<&std::path::Path>, role: Role) -> ExitCode {
    let dir_override = std::env::var_os(webrep::config::DEFAULT_CONFIG_DIR_ENV);
    let config_path = webrep::config::config_file_to_read(config_path, dir_override.as_deref());
    let config_path = config_path.as_deref();
    let config = match Config::load(config_path) {
        Ok(c) => c,
        Err(e) => return config_error(&e),
    };
    let _log = match webrep::telemetry::init(&config.log.level, config.log.format) {
        Ok(guard) => guard,
        Err(e) => return error(Exit::Config, &e),
    };
    match config_path {
        Some(path) => tracing::info!(config.file = %path.display(), "configuration read"),
        None => tracing::info!("no configuration file: the built-in defaults apply"),
    }
    // The proxy's worker 0 runs on this thread; `Proxy::run` starts one more
    // single-threaded runtime per further worker.
    let built = match role {
        Role::Proxy => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .max_blocking_threads(webrep::proxy::MAX_BLOCKING_THREADS)
            .build(),
        Role::Server => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => return fail(anyhow::Error::new(e).context("cannot start the runtime")),
    };
    let result = match role {
        Role::Proxy => rt.block_on(webrep::app::run_proxy(config, config_path)),
        Role::Server => rt.block_on(webrep::app::run_server(&config, config_path)),
    };
    rt.shutdown_timeout(webrep::shutdown::BLOCKING_TASKS_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => error(webrep::exit::classify(&e), &format!("{e:#}")),
    }
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
                    webrep::outln!(
                        "created {} and {} (mode 0600)\nSHA-256 fingerprint: {}\nnext: `webrep ca show --dir {}` explains how clients trust it",
                        dir.join(ca::CERT_FILE).display(),
                        dir.join(ca::KEY_FILE).display(),
                        c.fingerprint(),
                        dir.display()
                    );
                    ExitCode::SUCCESS
                }
                // Replacing a CA needs --force.
                Err(e @ ca::CaError::Exists(_)) => error(Exit::Usage, &e.to_string()),
                Err(e) => error(Exit::CantCreate, &format!("{:#}", anyhow::Error::new(e))),
            }
        }
        CaCommand::Show { dir } => match ca::load(&dir) {
            Ok(c) => {
                webrep::out!("{}", ca::describe(&c));
                ExitCode::SUCCESS
            }
            Err(e @ (ca::CaError::Invalid { .. } | ca::CaError::KeyPermissions(..))) => {
                error(Exit::DataErr, &format!("{:#}", anyhow::Error::new(e)))
            }
            Err(e) => error(Exit::NoInput, &format!("{:#}", anyhow::Error::new(e))),
        },
    }
}

/// Runs a client command on a small runtime; prints its error and maps it to an exit code.
fn client_command(
    f: impl std::future::Future<Output = Result<(), webrep::app::commands::CommandError>>,
) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(anyhow::Error::new(e).context("cannot start the runtime")),
    };
    webrep::tls::install_default();
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => error(e.code, &e.message),
    }
}

/// A config that cannot be loaded at start: each problem on its own line (the format of
/// `webrep config check`), exit 78.
fn config_error(e: &ConfigError) -> ExitCode {
    match e {
        ConfigError::Invalid(problems) => {
            for p in problems {
                webrep::errln!("{p}");
            }
            webrep::errln!("error: the configuration is invalid");
            Exit::Config.into()
        }
        ConfigError::Read(_) => error(Exit::Config, &webrep::client::chain(e)),
    }
}

fn error(code: Exit, message: &str) -> ExitCode {
    webrep::errln!("error: {message}");
    code.into()
}

fn fail(e: anyhow::Error) -> ExitCode {
    webrep::errln!("error: {e:#}");
    ExitCode::FAILURE
}
