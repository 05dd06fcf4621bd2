//! Push small sample images to a registry, for `scripts/demo` and `scripts/bench`.
//!
//! `push_images HOST SEED REPO:TAG...` — the first reference becomes a two-platform OCI
//! index and the second a Docker manifest list when three or more are given (so the demo
//! shows both); the rest are single-platform OCI images. The same seed gives the same
//! digests; another seed gives new content under the same tags. Plain HTTP (loopback).

#[path = "../tests/it/images.rs"]
mod images;

use std::process::ExitCode;

fn main() -> ExitCode {
    lockstep::resolve::install_crypto_provider();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, seed, refs @ ..] = args.as_slice() else {
        eprintln!("usage: push_images HOST SEED REPO:TAG...");
        return ExitCode::from(2);
    };
    let pusher = images::Pusher {
        host: host.clone(),
        ca_pem: None,
        auth: None,
    };
    let mixed = refs.len() >= 3;
    // Pushing is I/O bound: a few threads keep the registry busy.
    let chunks: Vec<Vec<(usize, &String)>> = {
        let mut c = vec![Vec::new(); 8];
        for (i, r) in refs.iter().enumerate() {
            c[i % 8].push((i, r));
        }
        c
    };
    let failed = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                let pusher = pusher.clone();
                s.spawn(move || {
                    for (i, r) in chunk {
                        let Some((repo, tag)) = r.rsplit_once(':') else {
                            eprintln!("{r}: expected REPO:TAG");
                            return true;
                        };
                        let seed = format!("{seed}-{r}");
                        let digest = match (mixed, i) {
                            (true, 0) => pusher.push_index(repo, tag, seed.as_bytes()).0,
                            (true, 1) => pusher.push_docker_list(repo, tag, seed.as_bytes()).0,
                            _ => pusher.push_image(repo, tag, seed.as_bytes()),
                        };
                        println!("{host}/{r} {digest}");
                    }
                    false
                })
            })
            .collect();
        handles.into_iter().any(|h| h.join().unwrap_or(true))
    });
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
