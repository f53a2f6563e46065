//! Traffic that runs across an event (an agent's upgrade, restart or kill): a TCP
//! stream whose every byte is checked, and a paced UDP stream whose datagrams are
//! counted one by one. Sockets are opened in their namespaces and then driven from
//! ordinary threads (a socket stays in the namespace it was made in).
use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::netns::Netns;

/// The byte at offset `offset` of a checked TCP stream.
fn pattern(offset: u64) -> u8 {
    (offset % 251) as u8
}

/// A sender and a receiver thread, the flag that stops the sender (and tells the
/// receiver to finish once idle), and the receiver's running count.
struct Flow<S, R> {
    stop: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
    sender: JoinHandle<S>,
    receiver: JoinHandle<R>,
}

impl<S, R> Flow<S, R> {
    /// Starts `sender` and `receiver`, each given the stop flag and the count.
    fn start(
        sender: impl FnOnce(Arc<AtomicBool>) -> S + Send + 'static,
        receiver: impl FnOnce(Arc<AtomicBool>, Arc<AtomicU64>) -> R + Send + 'static,
    ) -> Self
    where
        S: Send + 'static,
        R: Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicU64::new(0));
        let sender = {
            let stop = Arc::clone(&stop);
            thread::spawn(move || sender(stop))
        };
        let receiver = {
            let (stop, received) = (Arc::clone(&stop), Arc::clone(&received));
            thread::spawn(move || receiver(stop, received))
        };
        Self {
            stop,
            received,
            sender,
            receiver,
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Stops the sender and waits for both threads.
    fn finish(self) -> (S, R) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.join().expect("the sender panicked");
        let received = self.receiver.join().expect("the receiver panicked");
        (sent, received)
    }
}

/// A TCP stream from one namespace to a listener in another, paced, whose receiver
/// checks every byte's value and order.
pub struct CheckedTcpStream(Flow<std::io::Result<u64>, std::io::Result<(u64, Option<u64>)>>);

/// What a stream delivered.
#[derive(Debug)]
pub struct TcpStreamReport {
    /// Bytes the sender wrote, or the error that ended it (a reset connection).
    pub sent: Result<u64, String>,
    pub received: Result<u64, String>,
    /// The offset of the first byte that was not what was sent, if any.
    pub first_wrong_byte: Option<u64>,
}

impl CheckedTcpStream {
    /// Connects from `from` to `to` (listened on in `to_ns`) and sends about
    /// `bytes_per_second`, in 16 KiB writes, until [`CheckedTcpStream::finish`].
    pub fn start(from: &Netns, to_ns: &Netns, to: SocketAddr, bytes_per_second: u64) -> Self {
        let listener = to_ns.run(|| TcpListener::bind(to).expect("listening for the stream"));
        let mut stream = from.run(|| TcpStream::connect(to).expect("connecting the stream"));
        let (mut accepted, _) = listener.accept().expect("accepting the stream");
        let sender = move |stop: Arc<AtomicBool>| {
            let mut offset = 0u64;
            let started = Instant::now();
            let mut chunk = vec![0u8; 16 * 1024];
            while !stop.load(Ordering::Relaxed) {
                for (i, byte) in chunk.iter_mut().enumerate() {
                    *byte = pattern(offset + i as u64);
                }
                stream.write_all(&chunk)?;
                offset += chunk.len() as u64;
                let due = Duration::from_secs_f64(offset as f64 / bytes_per_second as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    thread::sleep(wait);
                }
            }
            stream.shutdown(std::net::Shutdown::Write)?;
            Ok(offset)
        };
        // Reads to the end of the stream, whatever the stop flag says.
        let receiver = move |_: Arc<AtomicBool>, received: Arc<AtomicU64>| {
            let mut buffer = vec![0u8; 64 * 1024];
            let mut offset = 0u64;
            let mut first_wrong = None;
            loop {
                let n = accepted.read(&mut buffer)?;
                if n == 0 {
                    return Ok((offset, first_wrong));
                }
                if first_wrong.is_none()
                    && let Some(i) = (0..n).find(|&i| buffer[i] != pattern(offset + i as u64))
                {
                    first_wrong = Some(offset + i as u64);
                }
                offset += n as u64;
                received.store(offset, Ordering::Relaxed);
            }
        };
        Self(Flow::start(sender, receiver))
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.0.received()
    }

    /// Stops sending, closes the stream and waits for the receiver to read the end.
    pub fn finish(self) -> TcpStreamReport {
        let (sent, received) = self.0.finish();
        let first_wrong_byte = received.as_ref().ok().and_then(|(_, wrong)| *wrong);
        TcpStreamReport {
            sent: sent.map_err(|e| e.to_string()),
            received: received.map(|(n, _)| n).map_err(|e| e.to_string()),
            first_wrong_byte,
        }
    }
}

/// Numbered UDP datagrams sent at a steady rate from one namespace to a socket in
/// another, which records each number it receives.
pub struct CountedUdpStream(Flow<u64, Vec<bool>>);

/// What a UDP stream delivered.
#[derive(Debug)]
pub struct UdpStreamReport {
    pub sent: u64,
    /// Distinct datagrams received.
    pub received: u64,
    /// Sent and never received.
    pub lost: u64,
}

impl CountedUdpStream {
    /// Sends `per_second` datagrams of 64 bytes from `from` to `to` (bound in `to_ns`)
    /// until [`CountedUdpStream::finish`]. The receiver's buffer is made large enough
    /// (SO_RCVBUFFORCE) that only the network loses datagrams.
    pub fn start(from: &Netns, to_ns: &Netns, to: SocketAddr, per_second: u64) -> Self {
        let socket = to_ns.run(|| UdpSocket::bind(to).expect("binding the UDP receiver"));
        nix::sys::socket::setsockopt(
            &socket.as_fd(),
            nix::sys::socket::sockopt::RcvBufForce,
            &(16 << 20),
        )
        .expect("enlarging the receive buffer");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("setting a read timeout");
        let unspecified: SocketAddr = match to {
            SocketAddr::V4(_) => "0.0.0.0:0".parse().unwrap(),
            SocketAddr::V6(_) => "[::]:0".parse().unwrap(),
        };
        let sending = from.run(|| UdpSocket::bind(unspecified).expect("binding the UDP sender"));
        let sender = move |stop: Arc<AtomicBool>| {
            let started = Instant::now();
            let mut sent = 0u64;
            let mut datagram = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * per_second as f64) as u64;
                while sent < due {
                    datagram[..8].copy_from_slice(&sent.to_be_bytes());
                    // A full send buffer: the datagram is not sent, so not counted.
                    if sending.send_to(&datagram, to).is_ok() {
                        sent += 1;
                    }
                }
                thread::sleep(Duration::from_micros(500));
            }
            sent
        };
        let receiver = move |stop: Arc<AtomicBool>, received: Arc<AtomicU64>| {
            let mut seen = Vec::new();
            let mut buffer = [0u8; 256];
            let mut count = 0u64;
            loop {
                match socket.recv(&mut buffer) {
                    Ok(n) if n >= 8 => {
                        let number = u64::from_be_bytes(buffer[..8].try_into().unwrap());
                        let index = number as usize;
                        if index >= seen.len() {
                            seen.resize(index + 1, false);
                        }
                        if !seen[index] {
                            seen[index] = true;
                            count += 1;
                            received.store(count, Ordering::Relaxed);
                        }
                    }
                    Ok(_) => {}
                    // Idle after the sender stopped: everything has arrived.
                    Err(_) if stop.load(Ordering::Relaxed) => return seen,
                    Err(_) => {}
                }
            }
        };
        Self(Flow::start(sender, receiver))
    }

    /// Datagrams received so far.
    pub fn received(&self) -> u64 {
        self.0.received()
    }

    /// Stops sending and waits until nothing more arrives.
    pub fn finish(self) -> UdpStreamReport {
        let (sent, seen) = self.0.finish();
        let received = seen.iter().filter(|s| **s).count() as u64;
        UdpStreamReport {
            sent,
            received,
            lost: sent.saturating_sub(received),
        }
    }
}
