//! `Isa::from_env` and `Isa::detect` read the real environment on every
//! call. The only test of this binary, so that nothing else reads the
//! environment while it changes.

use kernel::isa::{ISA_ENV, PORTABLE_ENV};
use kernel::Isa;

#[test]
fn the_environment_is_read_on_every_call() {
    let set = |isa: Option<&str>, portable: Option<&str>| {
        for (name, value) in [(ISA_ENV, isa), (PORTABLE_ENV, portable)] {
            match value {
                Some(v) => std::env::set_var(name, v),
                None => std::env::remove_var(name),
            }
        }
    };
    set(None, None);
    assert_eq!(Isa::detect(), Isa::best());
    set(Some("portable"), None);
    assert_eq!(Isa::detect(), Isa::Portable);
    set(None, Some("1"));
    assert_eq!(Isa::detect(), Isa::Portable);
    assert_eq!(Isa::default(), Isa::Portable);
    set(Some("nonsense"), None);
    assert!(Isa::from_env().unwrap_err().contains("nonsense"));
    assert!(std::panic::catch_unwind(Isa::detect).is_err(), "detect() must not fall back silently");
    set(None, None);
    assert_eq!(Isa::from_env(), Ok(Isa::best()));
}
