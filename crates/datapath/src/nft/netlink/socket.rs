//! A netlink socket to the kernel's nftables subsystem, with bounded waits, and the two
//! exchanges masq makes on it: a dump of one kind of object of its table, and the generation.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::codec::{
    c_string, error_code, generation_of, message, messages, string_attr, NFNL_SUBSYS_NFTABLES,
    NFPROTO_INET, NFTA_TABLE_OF_OBJECT, NFT_MSG_NEWGEN,
};
use crate::names::NFT_TABLE;

pub(super) struct Socket(OwnedFd);

impl Socket {
    pub(super) fn open() -> io::Result<Socket> {
        // SAFETY: plain socket(2); the descriptor is owned from here on.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let socket = Socket(unsafe { OwnedFd::from_raw_fd(fd) });
        // Bounded waits: a kernel that never answers is an error, not a hang.
        let timeout = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        socket.set_option(libc::SO_RCVTIMEO, &timeout)?;
        Ok(socket)
    }

    pub(super) fn set_option<T>(&self, option: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: value points to a live T of the given size.
        let rc = unsafe {
            libc::setsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (value as *const T).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<T>()).expect("small"),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// A batch goes to the kernel in one datagram, which must fit the send buffer.
    pub(super) fn reserve_send_buffer(&self, len: usize) -> io::Result<()> {
        const DEFAULT_ENOUGH: usize = 128 * 1024;
        if len < DEFAULT_ENOUGH {
            return Ok(());
        }
        let size = libc::c_int::try_from(len * 2).map_err(io::Error::other)?;
        self.set_option(libc::SO_SNDBUFFORCE, &size)
    }

    pub(super) fn send(&self, bytes: &[u8]) -> io::Result<()> {
        // SAFETY: an all-zero sockaddr_nl addresses the kernel.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: bytes and kernel outlive the call.
        let sent = unsafe {
            libc::sendto(
                self.0.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&kernel as *const libc::sockaddr_nl).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_nl>()).expect("small"),
            )
        };
        match usize::try_from(sent) {
            Ok(n) if n == bytes.len() => Ok(()),
            Ok(n) => Err(io::Error::other(format!(
                "sent {n} of {} bytes",
                bytes.len()
            ))),
            Err(_) => Err(io::Error::last_os_error()),
        }
    }

    /// One datagram from the kernel into `buffer`; its length.
    pub(super) fn receive(&self, buffer: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buffer is writable for its length.
        let received = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
                0,
            )
        };
        usize::try_from(received).map_err(|_| io::Error::last_os_error())
    }

    /// Every object of kind `answer` that a dump request `request` returns for masq's inet
    /// table, as its attributes (after the nfgenmsg). A table that does not exist has none.
    pub(super) fn dump_table_objects(&self, request: u16, answer: u16) -> io::Result<Vec<Vec<u8>>> {
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        self.send(&message(
            (NFNL_SUBSYS_NFTABLES << 8) | request,
            flags,
            NFPROTO_INET,
            |m| m.attr(NFTA_TABLE_OF_OBJECT, &c_string(NFT_TABLE)),
        ))?;
        let mut objects = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        // Bounded: a dump of masq's table is a few datagrams, or the socket times out.
        for _ in 0..4096 {
            let received = self.receive(&mut buffer)?;
            for (kind, payload) in messages(&buffer[..received])? {
                if kind == libc::NLMSG_DONE as u16 {
                    return Ok(objects);
                }
                if kind == libc::NLMSG_ERROR as u16 {
                    match error_code(payload) {
                        0 => {}
                        code if code == -libc::ENOENT => return Ok(Vec::new()),
                        code => return Err(io::Error::from_raw_os_error(-code)),
                    }
                } else if kind == (NFNL_SUBSYS_NFTABLES << 8) | answer {
                    let attrs = payload.get(4..).unwrap_or_default();
                    // Dumps of chains list every table of the family: keep masq's.
                    if string_attr(attrs, NFTA_TABLE_OF_OBJECT).as_deref() == Some(NFT_TABLE) {
                        objects.push(attrs.to_vec());
                    }
                }
            }
        }
        Err(io::Error::other("the dump did not end"))
    }

    /// Reads until the NEWGEN answer; an error the kernel reported first fails the call.
    pub(super) fn receive_generation(&self) -> io::Result<u32> {
        let mut buffer = vec![0u8; 64 * 1024];
        // Bounded: the answer comes within a few datagrams, or the socket times out.
        for _ in 0..1024 {
            let received = self.receive(&mut buffer)?;
            for (kind, payload) in messages(&buffer[..received])? {
                if kind == libc::NLMSG_ERROR as u16 {
                    let code = error_code(payload);
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                } else if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                    return generation_of(payload)
                        .ok_or_else(|| io::Error::other("generation answer without an id"));
                }
            }
        }
        Err(io::Error::other("no generation answer"))
    }
}
