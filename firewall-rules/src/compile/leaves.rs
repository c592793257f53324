//! A generation's leaf lists (entry indices in rule order), each stored once: trees and exact
//! tables often reach the same list.

use std::collections::HashMap;

/// Where `list` starts in `leaves`, appending it unless an equal list is already there.
pub fn store(leaves: &mut Vec<u32>, shared: &mut HashMap<Vec<u32>, u32>, list: Vec<u32>) -> u32 {
    *shared.entry(list).or_insert_with_key(|list| {
        let at = leaves.len() as u32;
        leaves.extend_from_slice(list);
        at
    })
}
