//! `sagebrush-bench`: measures sagebrush against the Python SageMaker Hugging Face Inference
//! Toolkit on the same model and inputs. `make-model` writes a BERT-base-sized classifier,
//! `run` is the load generator, `ready` times a cold start, `mem` sums the memory of a process
//! tree, `forward` times candle in-process, and `report` prints the markdown table.
//! `scripts/bench` drives all of them; `docs/benchmarks.md` has the results.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

use sagebrush_bench::workload::{Texts, Workload};
use sagebrush_bench::{forward, loadgen, model, procmem, report, stream};

/// Benchmarks for sagebrush and the reference server.
#[derive(Debug, Parser)]
#[command(name = "sagebrush-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a `BertForSequenceClassification` with random weights and a real tokenizer.
    MakeModel {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Model directory whose tokenizer files are copied.
        #[arg(long, default_value = "tests/fixtures/conformance/models/bert-seqcls")]
        tokenizer_from: PathBuf,
        #[command(flatten)]
        spec: model::ModelSpec,
    },
    /// Send a workload to a server and print req/s and latency percentiles.
    Run {
        /// Server base URL, e.g. `http://127.0.0.1:8080`.
        #[arg(long)]
        url: String,
        /// `tc-1x128`, `tc-32x128`, `fe-1x128`, `fe-32x128`, ...
        #[arg(long)]
        workload: Workload,
        /// Timed requests.
        #[arg(long, default_value_t = 50)]
        requests: usize,
        /// Clients sending at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Untimed requests first. Default: 2 per client.
        #[arg(long)]
        warmup: Option<usize>,
        #[command(flatten)]
        common: Common,
    },
    /// Stream a generation workload (`"stream": true`) and print time to first token and
    /// inter-token latency.
    Stream {
        /// Server base URL.
        #[arg(long)]
        url: String,
        /// A generation workload, e.g. `gen-1x16n64`.
        #[arg(long)]
        workload: Workload,
        /// Timed requests.
        #[arg(long, default_value_t = 10)]
        requests: usize,
        /// Clients sending at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Untimed requests first. Default: 1 per client.
        #[arg(long)]
        warmup: Option<usize>,
        #[command(flatten)]
        common: Common,
    },
    /// Send the workload's single-input request until one succeeds; print the cold start.
    Ready {
        /// Server base URL.
        #[arg(long)]
        url: String,
        /// Workload whose single-input body is the probe.
        #[arg(long)]
        workload: Workload,
        /// When the server process was started, Unix seconds (`date +%s.%N`).
        #[arg(long)]
        started_at: f64,
        /// Seconds to wait at most.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        /// Milliseconds between probes.
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
        /// Give up at once when this process (the server) has exited.
        #[arg(long)]
        pid: Option<u32>,
        /// Give up at once when an error answer contains this text (repeatable).
        #[arg(long)]
        fail_on: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Sum PSS and RSS of a process and its descendants, or of a whole session.
    Mem {
        /// Root process.
        #[arg(long, required_unless_present = "session", conflicts_with = "session")]
        pid: Option<u32>,
        /// Session ID (the PID of the `setsid` leader): all its processes.
        #[arg(long)]
        session: Option<u32>,
        /// Workload just measured (for the record).
        #[arg(long)]
        workload: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Time tokenizing and one BERT forward in-process (no server): candle-transformers' model
    /// or sagebrush's own (`--code sagebrush`).
    Forward {
        /// Workload to time.
        #[arg(long)]
        workload: Workload,
        /// Whose model code runs the forward pass.
        #[arg(long, value_enum, default_value_t = forward::Code::Candle)]
        code: forward::Code,
        /// Timed iterations.
        #[arg(long, default_value_t = 10)]
        iters: usize,
        /// Weight type of sagebrush's model (`--code sagebrush`): `float32` or `bfloat16`.
        #[arg(long, default_value = "float32", value_parser = parse_dtype)]
        dtype: sagebrush::models::WeightDtype,
        #[command(flatten)]
        common: Common,
    },
    /// Print the markdown table of a results file.
    Report {
        /// The `.jsonl` results file.
        results: PathBuf,
        /// Server that ratios divide by.
        #[arg(long, default_value = "reference")]
        baseline: String,
    },
}

/// Flags shared by the measuring commands.
#[derive(Debug, clap::Args)]
struct Common {
    /// Model directory (its `tokenizer.json` builds the texts).
    #[arg(long, default_value = "target/bench-model")]
    model: PathBuf,
    /// Name of the server in the results (`sagebrush`, `reference`, ...).
    #[arg(long, default_value = "server")]
    server: String,
    /// Append the result as one JSON line to this file.
    #[arg(long)]
    record: Option<PathBuf>,
}

impl Common {
    /// Prints `figures` as one JSON line and appends it to `--record`.
    fn emit(
        &self,
        kind: &str,
        workload: Option<&str>,
        concurrency: Option<usize>,
        figures: &impl serde::Serialize,
    ) -> anyhow::Result<()> {
        let keys = [
            ("server", json!(self.server)),
            ("kind", json!(kind)),
            ("workload", json!(workload)),
            ("concurrency", concurrency.map_or(Value::Null, |c| json!(c))),
            ("load1", load1().map_or(Value::Null, |l| json!(l))),
        ];
        let line = match &self.record {
            Some(path) => report::append(path, &keys, figures)?,
            None => {
                let mut obj: serde_json::Map<String, Value> = keys
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect();
                if let Value::Object(f) = serde_json::to_value(figures)? {
                    obj.extend(f);
                }
                Value::Object(obj)
            }
        };
        println!("{line}");
        Ok(())
    }
}

/// The 1-minute load average when the figure was taken (other work on the machine skews it).
fn load1() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn invocations(url: &str) -> String {
    format!("{}/invocations", url.trim_end_matches('/'))
}

fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn main() -> ExitCode {
    // The allocator policy of `sagebrush` itself, so that in-process passes cost what they cost
    // in the server.
    sagebrush::memory::keep_freed();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("sagebrush-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::MakeModel {
            out,
            tokenizer_from,
            spec,
        } => {
            model::make_model(&spec, &out, &tokenizer_from)
                .with_context(|| format!("writing the model to `{}`", out.display()))?;
            eprintln!("wrote {}", out.display());
        }
        Command::Run {
            url,
            workload,
            requests,
            concurrency,
            warmup,
            common,
        } => {
            let texts = Texts::load(&common.model)?;
            let spec = loadgen::RunSpec {
                url: invocations(&url),
                workload,
                body: workload.body(&texts)?,
                requests,
                concurrency,
                warmup: warmup.unwrap_or(2 * concurrency),
            };
            let stats = client_runtime()?.block_on(loadgen::run(spec))?;
            common.emit(
                "run",
                Some(&workload.to_string()),
                Some(concurrency),
                &stats,
            )?;
        }
        Command::Stream {
            url,
            workload,
            requests,
            concurrency,
            warmup,
            common,
        } => {
            anyhow::ensure!(
                workload.task.generates(),
                "`stream` needs a generation workload (gen-… or t2t-…), not `{workload}`"
            );
            let texts = Texts::load(&common.model)?;
            let spec = stream::StreamSpec {
                url: invocations(&url),
                body: workload.stream_body(&texts)?,
                requests,
                concurrency,
                warmup: warmup.unwrap_or(concurrency),
            };
            let stats = client_runtime()?.block_on(stream::run(spec))?;
            common.emit(
                "stream",
                Some(&workload.to_string()),
                Some(concurrency),
                &stats,
            )?;
        }
        Command::Ready {
            url,
            workload,
            started_at,
            timeout,
            interval_ms,
            pid,
            fail_on,
            common,
        } => {
            let texts = Texts::load(&common.model)?;
            let body = workload.single().body(&texts)?;
            let cold = client_runtime()?.block_on(loadgen::ready(
                &invocations(&url),
                &body,
                started_at,
                Duration::from_secs(timeout),
                Duration::from_millis(interval_ms),
                &loadgen::ReadyStop {
                    server_pid: pid,
                    fail_on,
                },
            ))?;
            common.emit("cold", Some(&workload.to_string()), None, &cold)?;
        }
        Command::Mem {
            pid,
            session,
            workload,
            common,
        } => {
            let selection = match (pid, session) {
                (Some(pid), _) => procmem::Selection::Tree(pid),
                (None, Some(sid)) => procmem::Selection::Session(sid),
                (None, None) => anyhow::bail!("give `--pid` or `--session`"),
            };
            let mem = procmem::tree_memory(selection)?;
            common.emit("mem", workload.as_deref(), None, &mem)?;
        }
        Command::Forward {
            workload,
            code,
            iters,
            dtype,
            common,
        } => {
            let stats = forward::measure(&common.model, workload, code, iters, dtype)?;
            common.emit("forward", Some(&workload.to_string()), None, &stats)?;
        }
        Command::Report { results, baseline } => {
            let records = report::load(&results)?;
            let (inproc, servers): (Vec<_>, Vec<_>) = records
                .into_iter()
                .partition(|r| r.get("kind").and_then(Value::as_str) == Some("forward"));
            print!("{}", report::table(&servers, &baseline));
            if !inproc.is_empty() {
                println!("\nIn-process floor (no HTTP, candle-transformers BERT, median):\n");
                print!("{}", report::table(&inproc, &baseline));
            }
        }
    }
    Ok(())
}

/// `--dtype` of `forward`: sagebrush's names (`float32`, `bfloat16`, and their aliases).
fn parse_dtype(name: &str) -> Result<sagebrush::models::WeightDtype, String> {
    sagebrush::models::WeightDtype::parse(name)
        .ok_or_else(|| format!("`{name}` is not a weight type (float32, bfloat16)"))
}
