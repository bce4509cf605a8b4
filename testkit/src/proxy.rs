//! A TCP proxy for fault and scale-out tests: one listening address in front of one or
//! more backends (relay processes). New connections go to the backend the test routes them
//! to, or to the next one that accepts when that one refuses (a dead process), as a load
//! balancer with health checks would. The test can also
//! - freeze every connection (bytes are held, nothing is closed: a network cut without a
//!   FIN), [`Proxy::freeze`];
//! - cut the current connections silently for good while new ones go through,
//!   [`Proxy::cut_silently`], or close them all, [`Proxy::cut_all`];
//! - lose the answer to a request it recognises in what a client sends (the request
//!   reaches the server, its answer never reaches the client, the connection is cut),
//!   [`Proxy::lose_answers`];
//! - count what is connected where.
//!
//! It knows nothing of what it carries: recognising a request is the test's watcher.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Watches one connection: sees every chunk the client sends, before it is forwarded;
/// `true` means the server's answer to it is lost (see [`Proxy::lose_answers`]).
pub type Watcher = Box<dyn FnMut(&[u8]) -> bool + Send>;

/// Makes a [`Watcher`] for each new connection.
type WatcherFactory = Arc<dyn Fn() -> Watcher + Send + Sync>;

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
    watch: Mutex<Option<WatcherFactory>>,
    /// Answers lost on a watcher's word.
    lost: AtomicUsize,
}

/// A running proxy; stops (and cuts every connection) on drop.
pub struct Proxy {
    /// `127.0.0.1:PORT`: what clients connect to.
    pub host: String,
    state: Arc<State>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Binds a loopback port now (so its address can be given to relays as their public
    /// URL before they start); connections are refused until [`Proxy::set_backends`].
    pub fn bind() -> io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let host = listener.local_addr()?.to_string();
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
            })?;
        Ok(Proxy { host, state })
    }

    /// The backends (`host:port`), in routing order.
    ///
    /// # Panics
    /// On a backend that is not a socket address (a bug in the test).
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

    /// Every connection made from now on gets a watcher from `watcher()`. When the watcher
    /// says `true` of a chunk the client sends, the chunk is still forwarded, but
    /// whatever the server sends next on that connection is swallowed and both sides are
    /// closed: the request was made, its answer is lost. The decision is taken before the
    /// chunk goes up, so the answer cannot slip through first.
    pub fn lose_answers(&self, watcher: impl Fn() -> Watcher + Send + Sync + 'static) {
        *lock(&self.state.watch) = Some(Arc::new(watcher));
    }

    /// How many answers were lost on a watcher's word.
    pub fn answers_lost(&self) -> usize {
        self.state.lost.load(Ordering::SeqCst)
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
    let watcher = lock(&st.watch).as_ref().map(|make| make());
    let lose = Arc::new(AtomicU8::new(PASS));
    let up = {
        let (st, lose) = (Arc::clone(&st), Arc::clone(&lose));
        std::thread::spawn(move || pipe(&st, client, server, generation, Tap::Up(watcher, &lose)))
    };
    pipe(&st, s2, c2, generation, Tap::Down(&lose));
    let _ = up.join();
    lock(&st.live)[i] -= 1;
}

/// A connection's answer-losing state: nothing to lose, a watched request about to go
/// up, that request forwarded (the server's next bytes are lost).
const PASS: u8 = 0;
const ARMED: u8 = 1;
const SENT: u8 = 2;

/// What a direction of a connection does besides copying.
enum Tap<'a> {
    /// Client → server: the watcher (if any) arms the loss of the answer.
    Up(Option<Watcher>, &'a AtomicU8),
    /// Server → client: once the watched request is forwarded, the next bytes are
    /// swallowed and the connection is closed.
    Down(&'a AtomicU8),
}

/// Copies `from` → `to` until either side ends, holding bytes while frozen; then closes
/// both so the other direction ends too.
fn pipe(st: &State, mut from: TcpStream, mut to: TcpStream, generation: u64, mut tap: Tap<'_>) {
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
        match &mut tap {
            Tap::Up(watch, lose) => {
                if watch.as_mut().is_some_and(|w| w(&buf[..n])) {
                    // Armed before the request goes up: its answer cannot slip through.
                    lose.store(ARMED, Ordering::SeqCst);
                    let sent = to.write_all(&buf[..n]).is_ok();
                    lose.store(if sent { SENT } else { PASS }, Ordering::SeqCst);
                    if !sent {
                        break;
                    }
                    continue;
                }
            }
            Tap::Down(lose) => {
                // Bytes read while the watched request is still being written are the
                // answer's or earlier ones: either way they are lost with it.
                while lose.load(Ordering::SeqCst) == ARMED {
                    std::thread::yield_now();
                }
                if lose.load(Ordering::SeqCst) == SENT {
                    st.lost.fetch_add(1, Ordering::SeqCst);
                    break;
                }
            }
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::sync::mpsc;

    use super::*;

    /// A line server: answers each line with `ok <line>`, and reports the lines it got.
    fn line_server() -> (String, mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let host = listener.local_addr().expect("address").to_string();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut w = conn.try_clone().expect("clone");
                    for line in BufReader::new(conn).lines() {
                        let Ok(line) = line else { return };
                        let _ = tx.send(line.clone());
                        if writeln!(w, "ok {line}").is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (host, rx)
    }

    fn ask(r: &mut BufReader<TcpStream>, w: &mut TcpStream, line: &str) -> Option<String> {
        writeln!(w, "{line}").expect("write");
        let mut answer = String::new();
        match r.read_line(&mut answer) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(answer.trim_end().to_owned()),
        }
    }

    #[test]
    fn a_watched_request_goes_through_and_its_answer_is_lost() {
        let (backend, got) = line_server();
        let proxy = Proxy::bind().expect("bind");
        proxy.set_backends(&[&backend]);
        proxy.lose_answers(|| Box::new(|bytes: &[u8]| bytes.starts_with(b"lose")));
        let connect = || {
            let w = TcpStream::connect(&proxy.host).expect("connect");
            w.set_read_timeout(Some(Duration::from_secs(60)))
                .expect("timeout");
            (BufReader::new(w.try_clone().expect("clone")), w)
        };
        let (mut r, mut w) = connect();
        assert_eq!(ask(&mut r, &mut w, "one").as_deref(), Some("ok one"));
        assert_eq!(ask(&mut r, &mut w, "lose this"), None, "the answer is lost");
        let seen: Vec<String> = (0..2)
            .map(|_| got.recv_timeout(Duration::from_secs(60)).expect("a line"))
            .collect();
        assert_eq!(seen, ["one", "lose this"], "the request reached the server");
        assert_eq!(proxy.answers_lost(), 1);
        // A new connection is forwarded as usual.
        let (mut r, mut w) = connect();
        assert_eq!(ask(&mut r, &mut w, "two").as_deref(), Some("ok two"));
        assert_eq!(proxy.total(0), 2);
    }
}
