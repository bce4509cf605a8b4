//! A TCP proxy for the fault and scale-out tests: one listening address in front of one or
//! more backends (relay processes). New connections go to the backend the test routes them
//! to, or to the next one that accepts when that one refuses (a dead process), as a load
//! balancer with health checks would. The test can also freeze every connection (bytes are
//! held, nothing is closed: a network cut without a FIN), cut the current connections
//! silently for good while new ones go through ([`Proxy::cut_silently`]), and count what is
//! connected where.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    backends: Mutex<Vec<SocketAddr>>,
    route: AtomicUsize,
    frozen: AtomicBool,
    /// Connections made before the last [`Proxy::cut_silently`] have an older generation.
    generation: AtomicU64,
    stop: AtomicBool,
    /// Open connections per backend.
    live: Mutex<Vec<usize>>,
    /// Connections accepted per backend since start.
    total: Mutex<Vec<usize>>,
    /// Both ends of every open connection, to cut them.
    open: Mutex<Vec<TcpStream>>,
}

/// A running proxy; stops (and cuts every connection) on drop.
pub struct Proxy {
    /// `127.0.0.1:PORT`: what clients connect to.
    pub host: String,
    state: Arc<State>,
}

impl Proxy {
    /// Binds a loopback port now (so its address can be given to relays as their public
    /// URL before they start); connections are refused until [`Proxy::set_backends`].
    pub fn bind() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let host = listener.local_addr().expect("proxy address").to_string();
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        std::thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || {
                for client in listener.incoming() {
                    if st.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(client) = client else { continue };
                    let st = Arc::clone(&st);
                    std::thread::spawn(move || connect(st, client));
                }
            })
            .expect("proxy thread");
        Proxy { host, state }
    }

    /// The backends, in routing order.
    pub fn set_backends(&self, backends: &[&str]) {
        let addrs: Vec<SocketAddr> = backends
            .iter()
            .map(|b| b.parse().expect("backend host:port"))
            .collect();
        *lock(&self.state.live) = vec![0; addrs.len()];
        *lock(&self.state.total) = vec![0; addrs.len()];
        *lock(&self.state.backends) = addrs;
    }

    /// New connections go to backend `i` (or the next one that accepts).
    pub fn route_to(&self, i: usize) {
        self.state.route.store(i, Ordering::SeqCst);
    }

    /// Open connections to backend `i`.
    pub fn live(&self, i: usize) -> usize {
        lock(&self.state.live).get(i).copied().unwrap_or(0)
    }

    /// Connections made to backend `i` since start.
    pub fn total(&self, i: usize) -> usize {
        lock(&self.state.total).get(i).copied().unwrap_or(0)
    }

    /// While frozen, no byte moves in either direction and nothing is closed.
    pub fn freeze(&self, frozen: bool) {
        self.state.frozen.store(frozen, Ordering::SeqCst);
    }

    /// Cuts every current connection without a close, for good: their bytes are held until
    /// the proxy is dropped (a dead NAT entry, a pulled cable). Connections made later are
    /// forwarded as usual.
    pub fn cut_silently(&self) {
        self.state.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Closes every open connection (both ends).
    pub fn cut_all(&self) {
        for s in lock(&self.state.open).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        self.state.frozen.store(false, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect(&self.host);
        self.cut_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connects `client` to the routed backend, or the next that accepts; then pipes.
fn connect(st: Arc<State>, client: TcpStream) {
    let backends = lock(&st.backends).clone();
    if backends.is_empty() {
        return;
    }
    let generation = st.generation.load(Ordering::SeqCst);
    let first = st.route.load(Ordering::SeqCst) % backends.len();
    let chosen = (0..backends.len()).find_map(|k| {
        let i = (first + k) % backends.len();
        TcpStream::connect_timeout(&backends[i], Duration::from_secs(2))
            .ok()
            .map(|s| (i, s))
    });
    let Some((i, server)) = chosen else {
        return; // every backend refused: the client sees its connection closed
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut open = lock(&st.open);
        if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
            open.push(a);
            open.push(b);
        }
    }
    lock(&st.live)[i] += 1;
    lock(&st.total)[i] += 1;
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let st2 = Arc::clone(&st);
    let up = std::thread::spawn(move || pipe(&st2, client, server, generation));
    pipe(&st, s2, c2, generation);
    let _ = up.join();
    lock(&st.live)[i] -= 1;
}

/// Copies `from` → `to` until either side ends, holding bytes while frozen; then closes
/// both so the other direction ends too.
fn pipe(st: &State, mut from: TcpStream, mut to: TcpStream, generation: u64) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while (st.frozen.load(Ordering::SeqCst)
            || st.generation.load(Ordering::SeqCst) != generation)
            && !st.stop.load(Ordering::SeqCst)
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
