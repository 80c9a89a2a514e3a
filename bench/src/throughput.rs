//! Throughput of one TCP stream from the pod to the "internet" host: iperf3 when installed,
//! else a plain sender and sink of our own. Both are bounded by time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use masq_testbed::Netns;

use crate::{clients, pin};

/// The iperf3 (and fallback) port.
const PORT: u16 = 5201;

/// Which tool measures throughput on this machine.
pub fn tool() -> &'static str {
    let found = std::process::Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if found {
        "iperf3"
    } else {
        "builtin"
    }
}

/// Gbit/s of one stream from `client` to `server_ip` in `server_ns`, for `seconds`.
pub fn one_stream(
    client: &Netns,
    server_ns: &Netns,
    server_ip: std::net::IpAddr,
    seconds: u32,
    cpus: (Option<usize>, Option<usize>),
) -> Result<f64> {
    if tool() == "iperf3" {
        iperf3(client, server_ns, server_ip, seconds, cpus)
    } else {
        builtin(
            client,
            server_ns,
            SocketAddr::new(server_ip, PORT),
            seconds,
            cpus,
        )
    }
}

fn iperf3(
    client: &Netns,
    server_ns: &Netns,
    server_ip: std::net::IpAddr,
    seconds: u32,
    (client_cpu, server_cpu): (Option<usize>, Option<usize>),
) -> Result<f64> {
    let ip = server_ip.to_string();
    let port = PORT.to_string();
    let mut server_args = pin::taskset(server_cpu);
    server_args.extend(["iperf3", "-s", "-1", "-B", &ip, "-p", &port].map(String::from));
    let mut server = server_ns
        .command(&server_args[0])
        .args(&server_args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the iperf3 server")?;
    let mut client_args = pin::taskset(client_cpu);
    let time = seconds.to_string();
    client_args.extend(
        [
            "iperf3",
            "-c",
            &ip,
            "-p",
            &port,
            "-t",
            &time,
            "-J",
            "--connect-timeout",
            "1000",
        ]
        .map(String::from),
    );
    let mut result = Err(anyhow::anyhow!("iperf3 did not run"));
    // The server needs a moment to listen; a refused first attempt is retried.
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(150));
        let out = client
            .command(&client_args[0])
            .args(&client_args[1..])
            .output()
            .context("running the iperf3 client")?;
        result = parse_iperf3(&String::from_utf8_lossy(&out.stdout));
        if result.is_ok() {
            break;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    result
}

/// Received bits per second of an `iperf3 -J` report, in Gbit/s.
fn parse_iperf3(json: &str) -> Result<f64> {
    let report: serde_json::Value = serde_json::from_str(json).context("iperf3 -J output")?;
    if let Some(error) = report.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {error}");
    }
    report
        .pointer("/end/sum_received/bits_per_second")
        .and_then(|v| v.as_f64())
        .map(|bps| bps / 1e9)
        .context("iperf3 report without end.sum_received.bits_per_second")
}

fn builtin(
    client: &Netns,
    server_ns: &Netns,
    server: SocketAddr,
    seconds: u32,
    (client_cpu, server_cpu): (Option<usize>, Option<usize>),
) -> Result<f64> {
    let listener = server_ns.enter(|| TcpListener::bind(server))??;
    let sink = std::thread::spawn(move || -> Result<(u64, Duration)> {
        pin::current_thread(server_cpu);
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        let mut first: Option<Instant> = None;
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    first.get_or_insert_with(Instant::now);
                    total += n as u64;
                }
            }
        }
        Ok((total, first.map(|f| f.elapsed()).unwrap_or_default()))
    });
    client.enter(|| -> Result<()> {
        pin::current_thread(client_cpu);
        let mut stream = clients::connect_from(0, server)?;
        let buf = vec![0u8; 128 * 1024];
        let deadline = Instant::now() + Duration::from_secs(u64::from(seconds));
        while Instant::now() < deadline {
            stream.write_all(&buf)?;
        }
        Ok(())
    })??;
    let (bytes, took) = sink.join().expect("the sink does not panic")?;
    Ok(bytes as f64 * 8.0 / took.as_secs_f64().max(1e-9) / 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_received_rate_or_the_error() {
        let ok = r#"{"end":{"sum_received":{"bits_per_second":2.5e10}}}"#;
        assert_eq!(parse_iperf3(ok).unwrap(), 25.0);
        let err = r#"{"error":"unable to connect to server"}"#;
        assert!(parse_iperf3(err)
            .unwrap_err()
            .to_string()
            .contains("unable to connect"));
    }
}
