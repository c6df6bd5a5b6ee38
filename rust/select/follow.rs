//! Outputs derived from the mask while a selection writes it ([`Follower`]): torch.prune's
//! float mask and masked weight ([`crate::pruned_state::select_with_state`]) come from the same read
//! of the weights as the mask, where a second kernel after the selection would read every
//! weight and mask byte again.

/// Told each piece of mask as the selection settles it, so it can derive its own outputs.
///
/// Calls for different chunks run on different threads at once; no two calls cover the same
/// elements at the same time.
pub trait Follower: Sync {
    /// The fused pass wrote the provisional mask `keep` of elements `start..start + keep.len()`
    /// of tensor `tensor`: the chunk's weights are still in cache.
    fn chunk(&self, tensor: usize, start: usize, keep: &[u8]);
    /// The fix-up changed element `index` of tensor `tensor` to `keep`.
    fn set(&self, tensor: usize, index: usize, keep: bool);
}

/// A follower of the whole list, seen by a selection of one tensor of it (layer scope ranks
/// each tensor on its own, which it calls tensor 0).
pub(crate) struct Shifted<'f> {
    pub inner: &'f dyn Follower,
    pub tensor: usize,
}

impl Follower for Shifted<'_> {
    fn chunk(&self, tensor: usize, start: usize, keep: &[u8]) {
        self.inner.chunk(self.tensor + tensor, start, keep)
    }

    fn set(&self, tensor: usize, index: usize, keep: bool) {
        self.inner.set(self.tensor + tensor, index, keep)
    }
}
