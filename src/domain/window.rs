//! The 5-hour request window per key and family: opened by the first counted request,
//! closed by time, refunded only inside the window that counted the request.

use super::Millis;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub started_at: Millis,
    pub count: u32,
}

/// What an admitted request learns about its window, for the `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowGrant {
    pub started_at: Millis,
    pub limit: u32,
    pub remaining: u32,
    pub resets_at: Millis,
}

/// A full window: when it frees up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowFull {
    pub limit: u32,
    pub resets_at: Millis,
}

impl Window {
    pub fn resets_at(&self, length_ms: Millis) -> Millis {
        self.started_at.saturating_add(length_ms)
    }

    pub fn is_open(&self, now: Millis, length_ms: Millis) -> bool {
        now < self.resets_at(length_ms)
    }

    /// Counts one request, opening a new window when there is none or the old one ended.
    pub fn admit(
        current: Option<Window>,
        now: Millis,
        length_ms: Millis,
        limit: u32,
    ) -> Result<(Window, WindowGrant), WindowFull> {
        let open = current.filter(|w| w.is_open(now, length_ms));
        let window = open.unwrap_or(Window {
            started_at: now,
            count: 0,
        });
        if window.count >= limit {
            return Err(WindowFull {
                limit,
                resets_at: window.resets_at(length_ms),
            });
        }
        let next = Window {
            started_at: window.started_at,
            count: window.count + 1,
        };
        Ok((
            next,
            WindowGrant {
                started_at: next.started_at,
                limit,
                remaining: limit - next.count,
                resets_at: next.resets_at(length_ms),
            },
        ))
    }

    /// Gives back one request counted in the window that started at `started_at`.
    pub fn refund(current: Option<Window>, started_at: Millis) -> Option<Window> {
        current.map(|w| {
            if w.started_at == started_at {
                Window {
                    started_at: w.started_at,
                    count: w.count.saturating_sub(1),
                }
            } else {
                w
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H5: Millis = 5 * 3600 * 1000;

    #[test]
    fn opens_counts_and_fills() {
        let (w, g) = Window::admit(None, 1000, H5, 2).unwrap();
        assert_eq!((w.count, g.remaining, g.resets_at), (1, 1, 1000 + H5));
        let (w, g) = Window::admit(Some(w), 2000, H5, 2).unwrap();
        assert_eq!((w.count, g.remaining), (2, 0));
        let full = Window::admit(Some(w), 3000, H5, 2).unwrap_err();
        assert_eq!(full.resets_at, 1000 + H5);
    }

    #[test]
    fn a_new_window_opens_after_the_old_one_ends() {
        let old = Window {
            started_at: 0,
            count: 2,
        };
        let (w, _) = Window::admit(Some(old), H5, H5, 2).unwrap();
        assert_eq!((w.started_at, w.count), (H5, 1));
    }

    #[test]
    fn refund_only_in_the_counting_window() {
        let w = Window {
            started_at: 10,
            count: 3,
        };
        assert_eq!(Window::refund(Some(w), 10).unwrap().count, 2);
        assert_eq!(Window::refund(Some(w), 9).unwrap().count, 3);
    }

    proptest! {
        #[test]
        fn never_admits_past_the_limit(limit in 1u32..50, tries in 1usize..200) {
            let mut w = None;
            let mut admitted = 0;
            for i in 0..tries {
                if let Ok((next, _)) = Window::admit(w, i as Millis, H5, limit) {
                    w = Some(next);
                    admitted += 1;
                }
            }
            prop_assert_eq!(admitted, tries.min(limit as usize));
        }
    }
}
