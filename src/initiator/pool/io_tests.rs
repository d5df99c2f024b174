//! The pool against real sockets: small blocking servers on loopback that count their
//! connections, and a [`LocalCluster`] on the test's monoio runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;

use super::*;

/// What a test server does with the `n`th request it reads (0-based, over all connections).
#[derive(Clone, Copy)]
enum Reply {
    /// Answer 200 after this long (closing early if the client goes away meanwhile).
    After(Duration),
    /// Close the connection without answering.
    Close,
}

/// Connections a test server holds: now, at most, and in all.
#[derive(Default)]
struct Tally {
    live: AtomicUsize,
    peak: AtomicUsize,
    accepted: AtomicUsize,
    requests: AtomicUsize,
    /// Every request head read, in order.
    heads: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
    fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// An HTTP/1.1 keep-alive server on loopback, one thread per connection.
fn h1_server(reply: fn(usize) -> Reply) -> (SocketAddr, Arc<Tally>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let tally = Arc::new(Tally::default());
    let t = tally.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let t = t.clone();
            let live = t.live.fetch_add(1, Ordering::SeqCst) + 1;
            t.peak.fetch_max(live, Ordering::SeqCst);
            t.accepted.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                serve_h1(stream, &t, reply);
                t.live.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, tally)
}

fn serve_h1(mut stream: TcpStream, tally: &Tally, reply: fn(usize) -> Reply) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(10)));
    let mut buf = Vec::new();
    loop {
        // A request head (the tests send no bodies).
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(_) => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        tally.heads.lock().unwrap().push(head);
        buf.drain(..head_end);
        let n = tally.requests.fetch_add(1, Ordering::SeqCst);
        match reply(n) {
            Reply::Close => return,
            Reply::After(delay) => {
                // Wait, noticing a client that leaves meanwhile.
                let until = std::time::Instant::now() + delay;
                while std::time::Instant::now() < until {
                    let mut probe = [0u8; 1];
                    match stream.peek(&mut probe) {
                        Ok(0) => return,
                        Ok(_) => std::thread::sleep(Duration::from_millis(10)),
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => return,
                    }
                }
                let body = format!("request {n}");
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                if stream.write_all(response.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// A port nothing listens on.
fn refusing_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.to_string()
}

fn cluster_of(endpoints: Vec<String>, tweak: impl FnOnce(&mut ClusterConfig)) -> Rc<LocalCluster> {
    let mut config = ClusterConfig::new(endpoints);
    config.connect_timeout = Duration::from_secs(2);
    tweak(&mut config);
    Rc::new(LocalCluster::new(
        "app".into(),
        config,
        None,
        Metrics::new(1),
        0,
    ))
}

fn get(path: &str) -> Request<LocalBody> {
    Request::get(path)
        .header(http::header::HOST, "app")
        .body(LocalBody::empty())
        .unwrap()
}

fn post(path: &str) -> Request<LocalBody> {
    Request::post(path)
        .header(http::header::HOST, "app")
        .body(LocalBody::empty())
        .unwrap()
}

/// Sends `req` and reads the whole response: (status, body).
async fn fetch(
    cluster: &Rc<LocalCluster>,
    req: Request<LocalBody>,
) -> Result<(u16, String), ProxyError> {
    let response = cluster.send(req).await?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|c| String::from_utf8_lossy(&c.to_bytes()).into_owned())
        .unwrap_or_else(|e| format!("body failed: {e}"));
    Ok((status, body))
}

fn stat(cluster: &LocalCluster, name: &str) -> u64 {
    cluster
        .stats
        .totals()
        .into_iter()
        .find(|(k, _)| *k == name)
        .map_or(0, |(_, v)| v)
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..300 {
        if cond() {
            return;
        }
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[monoio::test(timer_enabled = true)]
async fn a_connection_is_ready_again_as_its_response_body_ends() {
    let (addr, tally) = h1_server(|_| Reply::After(Duration::ZERO));
    let cluster = cluster_of(vec![addr.to_string()], |_| {});
    for n in 0..20 {
        let (status, body) = fetch(&cluster, get("/")).await.expect("served");
        assert_eq!(
            (status, body.as_str()),
            (200, format!("request {n}").as_str())
        );
        // No await since the body ended: no task ran to hand the connection back.
        assert_eq!(cluster.state.borrow().ready(), 1, "request {n}");
    }
    assert_eq!(tally.accepted(), 1, "one connection carried every request");
}

#[monoio::test(timer_enabled = true)]
async fn a_burst_shares_a_few_connections_and_every_request_succeeds() {
    let (addr, tally) = h1_server(|_| Reply::After(Duration::from_millis(20)));
    let cluster = cluster_of(vec![addr.to_string()], |c| c.max_connections = 4);
    let tasks: Vec<_> = (0..60)
        .map(|_| {
            let cluster = cluster.clone();
            monoio::spawn(async move { fetch(&cluster, get("/")).await })
        })
        .collect();
    for task in tasks {
        let (status, _) = task.await.expect("served");
        assert_eq!(status, 200);
    }
    assert!(
        tally.peak() <= 4,
        "the service saw {} connections",
        tally.peak()
    );
    assert_eq!(tally.accepted(), 4, "connections are reused, not reopened");
    assert_eq!(stat(&cluster, "initiator_local_connects"), 4);
}

#[monoio::test(timer_enabled = true)]
async fn a_full_queue_and_a_long_wait_are_503s() {
    let (addr, _tally) = h1_server(|_| Reply::After(Duration::from_millis(600)));
    let cluster = cluster_of(vec![addr.to_string()], |c| {
        c.max_connections = 1;
        c.max_pending = 1;
        c.queue_timeout = Duration::from_millis(200);
    });
    let first = {
        let cluster = cluster.clone();
        monoio::spawn(async move { fetch(&cluster, get("/slow")).await })
    };
    monoio::time::sleep(Duration::from_millis(50)).await;
    let second = {
        let cluster = cluster.clone();
        monoio::spawn(async move { fetch(&cluster, get("/waits")).await })
    };
    monoio::time::sleep(Duration::from_millis(20)).await;
    // The first holds the only connection, the second waits: the queue (1) is full.
    let full = cluster.send(get("/third")).await.err().expect("refused");
    assert_eq!(full.label(), "local_overloaded");
    assert_eq!(full.status(), 503);
    assert!(full.public_message().contains("max_pending"), "{full}");
    let expired = second.await.expect_err("expired");
    assert_eq!(expired.label(), "queue_timeout");
    assert_eq!(expired.status(), 503);
    assert_eq!(first.await.expect("the first is served").0, 200);
}

#[monoio::test(timer_enabled = true)]
async fn an_abandoned_request_closes_its_connection() {
    let (addr, tally) = h1_server(|_| Reply::After(Duration::from_secs(5)));
    let cluster = cluster_of(vec![addr.to_string()], |_| {});
    for _ in 0..5 {
        let sent =
            monoio::time::timeout(Duration::from_millis(100), fetch(&cluster, get("/"))).await;
        assert!(sent.is_err(), "abandoned after 100 ms");
    }
    // The service sees every connection closed, long before it would have answered.
    wait_until("the service's connections are closed", || tally.live() == 0).await;
    assert_eq!(tally.accepted(), 5, "never reused with a request in flight");
    let state = cluster.state.borrow();
    assert_eq!((state.requests(), state.open(0)), (0, 0));
}

#[monoio::test(timer_enabled = true)]
async fn a_response_body_dropped_early_closes_its_connection() {
    let (addr, tally) = h1_server(|_| Reply::After(Duration::ZERO));
    let cluster = cluster_of(vec![addr.to_string()], |_| {});
    // Read whole: the connection is reused.
    assert_eq!(fetch(&cluster, get("/")).await.expect("served").0, 200);
    wait_until("the connection is idle", || {
        cluster.state.borrow().requests() == 0
    })
    .await;
    let response = cluster.send(get("/")).await.expect("head");
    assert_eq!(tally.accepted(), 1);
    // Dropped unread: the request is unfinished, the connection is closed, not pooled.
    assert!(!response.body().is_end_stream());
    drop(response);
    wait_until("the connection is closed", || tally.live() == 0).await;
    assert_eq!(cluster.state.borrow().open(0), 0);
}

#[monoio::test(timer_enabled = true)]
async fn idempotent_requests_reset_before_a_response_are_retried_once() {
    // The first request of all is met with a close; the rest are answered.
    let (addr, tally) = h1_server(|n| match n {
        0 => Reply::Close,
        _ => Reply::After(Duration::ZERO),
    });
    let cluster = cluster_of(vec![addr.to_string()], |_| {});
    let mut req = get("/again?x=1");
    req.headers_mut()
        .insert("x-request-id", http::HeaderValue::from_static("r-1"));
    let (status, body) = fetch(&cluster, req).await.expect("retried");
    assert_eq!((status, body.as_str()), (200, "request 1"));
    assert_eq!(stat(&cluster, "initiator_local_retries"), 1);
    assert_eq!(tally.accepted(), 2, "on another connection");
    // The second attempt is the same request, head for head (the connection gave it back).
    let heads = tally.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2);
    assert_eq!(heads[0], heads[1]);
    assert!(
        heads[1].starts_with("GET /again?x=1 HTTP/1.1\r\n"),
        "{}",
        heads[1]
    );
    assert!(heads[1].contains("x-request-id: r-1\r\n"), "{}", heads[1]);

    // Not idempotent: not sent twice.
    let (addr, tally) = h1_server(|n| match n {
        0 => Reply::Close,
        _ => Reply::After(Duration::ZERO),
    });
    let cluster = cluster_of(vec![addr.to_string()], |_| {});
    let failed = fetch(&cluster, post("/")).await.expect_err("not retried");
    assert_eq!(failed.label(), "local_error");
    assert_eq!(tally.requests.load(Ordering::SeqCst), 1);

    // Retried once only.
    let (addr, _) = h1_server(|_| Reply::Close);
    let cluster = cluster_of(vec![addr.to_string()], |_| {});
    let failed = fetch(&cluster, get("/")).await.expect_err("fails");
    assert_eq!(failed.label(), "local_error");
    assert_eq!(stat(&cluster, "initiator_local_retries"), 1);
}

#[monoio::test(timer_enabled = true)]
async fn a_refusing_endpoint_is_ejected_and_requests_go_to_the_healthy_one() {
    let (addr, tally) = h1_server(|_| Reply::After(Duration::from_millis(50)));
    let cluster = cluster_of(vec![refusing_endpoint(), addr.to_string()], |c| {
        c.consecutive_failures = 3;
    });
    // Concurrent requests need connections of their own: the endpoints take turns.
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let cluster = cluster.clone();
            monoio::spawn(async move { fetch(&cluster, get("/")).await })
        })
        .collect();
    for task in tasks {
        let (status, _) = task.await.expect("served by the healthy endpoint");
        assert_eq!(status, 200);
    }
    assert_eq!(stat(&cluster, "initiator_local_ejections"), 1);
    let failures = stat(&cluster, "initiator_local_connect_failures");
    // At most max_connecting (8) in flight, and 2 more started after the first 2 failures.
    assert!((3..=10).contains(&failures), "{failures} connect failures");
    assert_eq!(tally.accepted(), 20);
    // While it is out, nothing tries it.
    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let cluster = cluster.clone();
            monoio::spawn(async move { fetch(&cluster, get("/")).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("served").0, 200);
    }
    assert_eq!(stat(&cluster, "initiator_local_connect_failures"), failures);

    // A single endpoint that refuses is never ejected: each request fails once, quickly.
    let cluster = cluster_of(vec![refusing_endpoint()], |c| c.consecutive_failures = 1);
    for _ in 0..3 {
        let failed = fetch(&cluster, get("/")).await.expect_err("unreachable");
        assert_eq!(failed.label(), "local_unreachable");
    }
    assert_eq!(stat(&cluster, "initiator_local_ejections"), 0);
    assert_eq!(stat(&cluster, "initiator_local_connects"), 3);
}

#[monoio::test(timer_enabled = true)]
async fn an_abandoned_http2_request_resets_its_stream() {
    // An h2 server that never answers and reports each stream's reset.
    let listener = monoio::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let resets = Rc::new(RefCell::new(Vec::new()));
    let seen = resets.clone();
    monoio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let Ok(io) = stream.try_into_poll_io() else {
            return;
        };
        let Ok(mut conn) = h2::server::handshake(io).await else {
            return;
        };
        while let Some(Ok((_request, mut respond))) = conn.accept().await {
            let seen = seen.clone();
            monoio::spawn(async move {
                let reason = poll_fn(|cx| respond.poll_reset(cx)).await;
                seen.borrow_mut().push(reason.ok());
            });
        }
    });
    let cluster = cluster_of(vec![addr.to_string()], |c| c.protocol = Protocol::Http2);
    let req = Request::get(format!("http://{addr}/"))
        .body(LocalBody::empty())
        .unwrap();
    let sent = monoio::time::timeout(Duration::from_millis(200), cluster.send(req)).await;
    assert!(sent.is_err(), "the server never answers");
    wait_until("the server sees the reset", || !resets.borrow().is_empty()).await;
    assert_eq!(*resets.borrow(), [Some(h2::Reason::CANCEL)]);
    let state = cluster.state.borrow();
    assert_eq!(state.requests(), 0);
    assert_eq!(state.open(0), 1, "the connection itself stays");
}
