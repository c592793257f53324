//! What the packet path needs from its program's context, so that one copy of parse, track,
//! classify and meter serves the XDP program (ingress) and the TC program (egress).

use aya_ebpf::programs::{TcContext, XdpContext};

pub trait Wire {
    /// The first byte of the frame (its Ethernet header).
    fn data(&self) -> usize;
    /// One past the last byte the program may read directly.
    fn data_end(&self) -> usize;
    /// The interface the packet arrives on (XDP) or leaves by (TC egress).
    fn ifindex(&self) -> u32;
    /// The whole frame's length, without FCS, for the byte counters.
    fn len(&self) -> u32;
}

impl Wire for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.ingress_ifindex() as u32
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        (XdpContext::data_end(self) - XdpContext::data(self)) as u32
    }
}

impl Wire for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the kernel passes a valid __sk_buff for the program's whole run.
        unsafe { (*self.skb.skb).ifindex }
    }

    /// `skb->len`: the whole packet, also what is not in the linear part.
    #[inline(always)]
    fn len(&self) -> u32 {
        TcContext::len(self)
    }
}
