//! `mqtt-bench`: load generator for mqttd and other MQTT brokers (loopback only).
//!
//! ```text
//! mqtt-bench fan-in --port 1883                 # 8 publishers -> 1 subscriber on '#', QoS 0
//! mqtt-bench qos1 --duration 10s                # 4 -> 4, QoS 1, 64 in flight, loss check
//! mqtt-bench fan-out                            # 1 -> 100 subscribers
//! mqtt-bench latency --rate 5000                # p50/p99/max end-to-end
//! mqtt-bench connections --broker-pid PID       # 10,000 idle clients, broker RSS per connection
//! mqtt-bench connect-rate --username u --password p [--tls --cafile certs/ca.pem --port 8883]
//! mqtt-bench fan-in --tls --cafile certs/ca.pem --port 8883   # any scenario but latency over TLS
//! mqtt-bench http-publish --http-port 18083 --username u      # POST /api/v1/publish, keep-alive
//! mqtt-bench coap-publish --coap-port 5683 --coap-mode con     # CoAP POST /ps/..., UDP
//! ```
//!
//! Each run prints a table and then one JSON line (`{"scenario":...}`) for scripts; see
//! `tools/compare`, which runs the scenarios against mqttd and Mosquitto in turn.

use std::process::ExitCode;

use clap::Parser;
use mqttd_tools::bench::{self, Opts, Scenario};

#[derive(Parser)]
#[command(version, about = "MQTT load generator (loopback only)")]
struct Cli {
    #[arg(value_enum)]
    scenario: Scenario,
    /// Runtime worker threads for the generator (it shares the machine with the broker).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[command(flatten)]
    opts: Opts,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let fds = bench::raise_fd_limit();
    if cli.scenario == Scenario::Connections && (fds as usize) < cli.opts.clients + 64 {
        eprintln!(
            "mqtt-bench: the file descriptor limit is {fds}, too low for {} clients",
            cli.opts.clients
        );
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.clamp(1, 64))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mqtt-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench::run(cli.scenario, &cli.opts)) {
        Ok(report) => {
            print!("{}", report.table());
            println!("{}", report.json());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mqtt-bench {}: {e:#}", cli.scenario.name());
            ExitCode::FAILURE
        }
    }
}
