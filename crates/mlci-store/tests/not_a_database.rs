//! A path that is not a database is refused, naming it, and never written (issue 11:
//! a 1-byte file given as `--db` was silently overwritten).

use mlci_core::Store;
use mlci_store::{check_database_path, SqliteStore};

#[test]
fn a_folder_or_a_file_of_something_else_is_refused_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    let e = SqliteStore::open(&folder).unwrap_err();
    assert!(
        e.0.contains(&folder.display().to_string()) && e.0.contains("is a folder"),
        "{e}"
    );
    assert!(
        std::fs::read_dir(&folder).unwrap().next().is_none(),
        "nothing written inside"
    );

    for content in [
        &b"x"[..],
        b"SQLite format 2\0and more",
        b"hello, this is a long text file\n",
    ] {
        let file = tmp.path().join("file");
        std::fs::write(&file, content).unwrap();
        let e = check_database_path(&file).unwrap_err();
        assert_eq!(e.path, file);
        let e = SqliteStore::open(&file).unwrap_err();
        assert!(
            e.0.contains(&file.display().to_string()) && e.0.contains("is not an SQLite database"),
            "{e}"
        );
        assert_eq!(std::fs::read(&file).unwrap(), content, "left as it was");
        assert!(!tmp.path().join("file-wal").exists());
    }
}

#[test]
fn an_absent_or_empty_file_becomes_a_database_and_a_database_opens_again() {
    let tmp = tempfile::tempdir().unwrap();
    let absent = tmp.path().join("sub/new.db");
    check_database_path(&absent).unwrap();
    let store = SqliteStore::open(&absent).unwrap();
    assert!(store.experiments().unwrap().is_empty());
    drop(store);
    check_database_path(&absent).unwrap();
    SqliteStore::open(&absent).unwrap();

    let empty = tmp.path().join("empty.db");
    std::fs::write(&empty, "").unwrap();
    SqliteStore::open(&empty).unwrap();
    assert!(std::fs::read(&empty).unwrap().starts_with(b"SQLite format 3\0"));
}
