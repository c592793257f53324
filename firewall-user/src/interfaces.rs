//! Interfaces that go away and come back: a driver reset, or a VLAN, bond or veth deleted and
//! made again under the same name, is a new device with a new ifindex, and the kernel has
//! detached our XDP and TC links from the old one. The daemon watches the kernel's link
//! events (RTMGRP_LINK) and, on each, reconciles: every configured interface is looked up by
//! name and its pinned links asked where they are attached. One that vanished is logged
//! (warn) and reported as not attached (`status`, `reload`, `smf_firewall_xdp_attached`);
//! one that is back is bound to its slot under its new index, attached anew and logged
//! (info). A periodic reconcile covers events lost to a netlink overflow.

use std::{
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt as _;
use rtnetlink::{
    constants::RTMGRP_LINK,
    packet_core::NetlinkPayload,
    packet_route::{AddressFamily, RouteNetlinkMessage},
    sys::{AsyncSocket as _, SocketAddr},
};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use firewall_dataplane::{
    loader::{self, Dataplane, LoaderError},
    pins::{PinError, Pins},
};

use crate::metrics::status::{Attachment, SharedAttachments, mode_label};

/// How often the interfaces are reconciled without a link event.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Something happened to a link (or events were lost): time to reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEvent;

/// Listens to the kernel's link events for as long as the receiver lives; listens again
/// (after one event, for whatever was missed) if the socket fails.
pub fn watch() -> mpsc::UnboundedReceiver<LinkEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            match listen(&tx).await {
                Ok(()) if tx.is_closed() => return,
                Ok(()) => {
                    warn!(
                        "the kernel's link events stopped; listening again (interfaces are also checked every second)"
                    );
                }
                Err(error) => {
                    warn!(%error, "cannot listen to the kernel's link events; interfaces are checked every second only");
                }
            }
            if tx.send(LinkEvent).is_err() {
                return;
            }
            tokio::time::sleep(PERIOD).await;
        }
    });
    rx
}

async fn listen(tx: &mpsc::UnboundedSender<LinkEvent>) -> io::Result<()> {
    // The handle must live: the connection ends once no handle can send requests.
    let (mut connection, _handle, mut messages) = rtnetlink::new_connection()?;
    connection
        .socket_mut()
        .socket_mut()
        .bind(&SocketAddr::new(0, RTMGRP_LINK))?;
    let task = tokio::spawn(connection);
    while let Some((message, _)) = messages.next().await {
        let relevant = match message.payload {
            NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewLink(link) | RouteNetlinkMessage::DelLink(link),
            ) => {
                // AF_BRIDGE messages tell of bridge ports, not of devices coming and going.
                link.header.interface_family == AddressFamily::Unspec
            }
            NetlinkPayload::Overrun(_) | NetlinkPayload::Error(_) => true,
            _ => false,
        };
        if relevant && tx.send(LinkEvent).is_err() {
            break;
        }
    }
    task.abort();
    Ok(())
}

/// Why an attached interface no longer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vanished {
    /// No interface of that name.
    Deleted,
    /// The name now belongs to another device (another ifindex).
    Replaced(u32),
    /// Our pinned link is no longer on the device (the kernel detached it when the device
    /// went away, even if a new one got the same index).
    Detached,
}

impl std::fmt::Display for Vanished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Vanished::Deleted => f.write_str("the interface was deleted"),
            Vanished::Replaced(ifindex) => write!(
                f,
                "the interface was re-created (a new device, ifindex {ifindex})"
            ),
            Vanished::Detached => f.write_str("the kernel detached our program from it"),
        }
    }
}

/// Is an attachment still in force? `now` is the index the name has now, `links` where the
/// pinned XDP and egress links are attached (0: detached; None: not pinned).
pub fn vanished(
    attachment: &Attachment,
    now: Option<u32>,
    links: [Option<u32>; 2],
) -> Option<Vanished> {
    if !attachment.attached {
        return None;
    }
    match now {
        None => Some(Vanished::Deleted),
        Some(now) if now != attachment.ifindex => Some(Vanished::Replaced(now)),
        Some(now) if links.iter().any(|link| *link != Some(now)) => Some(Vanished::Detached),
        Some(_) => None,
    }
}

/// Keeps every configured interface attached.
pub struct Interfaces {
    pins: Pins,
    /// Each configured interface and its slot, in the config's order (that of the
    /// attachments).
    slots: Vec<(String, u32)>,
    /// What `smf_firewall_xdp_attached` reads.
    shared: SharedAttachments,
}

impl Interfaces {
    pub fn new(pins: Pins, slots: Vec<(String, u32)>, shared: SharedAttachments) -> Self {
        Interfaces {
            pins,
            slots,
            shared,
        }
    }

    /// Detaches (forgets) every attachment that vanished, then attaches every configured
    /// interface that is there and not attached. Returns whether anything changed.
    pub fn reconcile(&self, dataplane: &Mutex<Dataplane>, attachments: &mut [Attachment]) -> bool {
        let mut dataplane = dataplane
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut changed = false;
        // First every detach: a new device may have the index an old one had.
        for attachment in attachments.iter_mut() {
            let name = attachment.interface.clone();
            let now = loader::ifindex(&name).ok();
            let links = [self.pins.link(&name), self.pins.egress_link(&name)]
                .map(|path| loader::pinned_link_ifindex(&path).unwrap_or(Some(0)));
            let Some(reason) = vanished(attachment, now, links) else {
                continue;
            };
            warn!(interface = %name, ifindex = attachment.ifindex, reason = %reason, "interface vanished: its traffic is NOT filtered until it is back and attached again");
            attachment.attached = false;
            changed = true;
            if let Err(error) = self.forget(&mut dataplane, attachment) {
                error!(interface = %name, %error, "cannot let go of the vanished interface's links");
            }
        }
        for attachment in attachments.iter_mut().filter(|a| !a.attached) {
            let name = attachment.interface.clone();
            let Ok(ifindex) = loader::ifindex(&name) else {
                continue;
            };
            let Some(&(_, slot)) = self.slots.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            changed = true;
            match self.attach(&mut dataplane, &name, ifindex, slot) {
                Ok(mode) => {
                    let old = attachment.ifindex;
                    attachment.ifindex = ifindex;
                    attachment.mode = mode;
                    attachment.attached = true;
                    info!(interface = %name, ifindex, previous_ifindex = old, mode = mode_label(mode), rules = attachment.rules, reason = "the interface is back", "re-attached: enforcing rules again");
                }
                Err(error) => {
                    error!(interface = %name, ifindex, %error, "cannot attach to the interface: its traffic is NOT filtered; trying again at the next link event or in a second");
                    attachment.ifindex = ifindex;
                    let _ = self.forget(&mut dataplane, attachment);
                }
            }
        }
        drop(dataplane);
        if changed {
            *self
                .shared
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = attachments.to_vec();
        }
        changed
    }

    /// Unbinds the attachment's index and drops its (detached) links and their pins.
    fn forget(
        &self,
        dataplane: &mut Dataplane,
        attachment: &Attachment,
    ) -> Result<(), ForgetError> {
        dataplane.unbind(attachment.ifindex)?;
        self.pins.unpin_link(&attachment.interface)?;
        dataplane.release_links(&attachment.interface)?;
        Ok(())
    }

    fn attach(
        &self,
        dataplane: &mut Dataplane,
        name: &str,
        ifindex: u32,
        slot: u32,
    ) -> Result<aya::programs::XdpMode, LoaderError> {
        // Bound first: the program judges the device's packets by its slot from its first.
        dataplane.bind(ifindex, slot)?;
        let mode = dataplane
            .attach_pinned(name, &self.pins.link(name))?
            .unwrap_or(aya::programs::XdpMode::Default);
        dataplane.attach_egress_pinned(name, &self.pins.egress_link(name))?;
        Ok(mode)
    }
}

/// Why the links of a vanished interface could not all be dropped.
#[derive(Debug, thiserror::Error)]
enum ForgetError {
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Pins(#[from] PinError),
}

/// Shares `attachments` for the metrics.
pub fn share(attachments: &[Attachment]) -> SharedAttachments {
    Arc::new(std::sync::RwLock::new(attachments.to_vec()))
}

#[cfg(test)]
mod tests {
    use aya::programs::XdpMode;

    use super::*;

    fn attachment(ifindex: u32, attached: bool) -> Attachment {
        Attachment {
            interface: "lan0".into(),
            ifindex,
            mode: XdpMode::Skb,
            rules: 1,
            attached,
        }
    }

    #[test]
    fn an_attachment_holds_while_its_name_index_and_links_agree() {
        assert_eq!(
            vanished(&attachment(5, true), Some(5), [Some(5), Some(5)]),
            None
        );
    }

    #[test]
    fn a_deleted_or_re_created_interface_has_vanished() {
        let a = attachment(5, true);
        assert_eq!(
            vanished(&a, None, [Some(0), Some(0)]),
            Some(Vanished::Deleted)
        );
        assert_eq!(
            vanished(&a, Some(9), [Some(0), Some(0)]),
            Some(Vanished::Replaced(9))
        );
        // Re-created with the same index (the events missed): the links tell.
        assert_eq!(
            vanished(&a, Some(5), [Some(0), Some(5)]),
            Some(Vanished::Detached)
        );
        // A pin that is gone is no attachment either.
        assert_eq!(
            vanished(&a, Some(5), [Some(5), None]),
            Some(Vanished::Detached)
        );
    }

    #[test]
    fn what_is_not_attached_does_not_vanish_again() {
        assert_eq!(vanished(&attachment(5, false), None, [None, None]), None);
    }
}
