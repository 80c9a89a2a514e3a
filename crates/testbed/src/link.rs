//! Link settings iproute2 of Debian 12 cannot make, over netlink (rtnetlink).

use anyhow::{Context, Result};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::LinkUnspec;

use crate::netns::Netns;

/// Lets `dev` in `ns` carry BIG TCP: GSO and GRO packets of up to `size` bytes, for IPv4
/// (`gso_ipv4_max_size`, kernel 6.3+) and IPv6 (`gso_max_size`).
pub fn allow_big_tcp(ns: &Netns, dev: &str, size: u32) -> Result<()> {
    ns.enter(|| set_attributes(dev, size))?.with_context(|| {
        format!(
            "in {}: raising the GSO and GRO sizes of {dev} to {size}",
            ns.name()
        )
    })
}

fn set_attributes(dev: &str, size: u32) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection()?;
            let task = tokio::spawn(conn);
            let link: LinkMessage = handle
                .link()
                .get()
                .match_name(dev.to_string())
                .execute()
                .try_next()
                .await?
                .with_context(|| format!("no link {dev}"))?;
            let message = LinkUnspec::new_with_index(link.header.index)
                .append_extra_attribute(LinkAttribute::GsoMaxSize(size))
                .append_extra_attribute(LinkAttribute::GroMaxSize(size))
                .append_extra_attribute(LinkAttribute::GsoIpv4MaxSize(size))
                .append_extra_attribute(LinkAttribute::GroIpv4MaxSize(size))
                .build();
            let result = handle.link().set(message).execute().await;
            task.abort();
            Ok(result?)
        })
}
