//! Loaders on real and hand-made corrupt inputs.

use std::io::Write;
use std::path::{Path, PathBuf};

use data::manifest::find_manifest;
use data::{DataDir, Split, cifar, folder, idx, load_split};

fn classes(n: usize) -> Vec<String> {
    (0..n).map(|c| c.to_string()).collect()
}

fn cifar_record(label: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend((0..3072).map(|i| (i % 256) as u8));
    r
}

#[test]
fn truncated_cifar_batch_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = cifar_record(1);
    bytes.extend(&cifar_record(2)[..1000]);
    std::fs::write(dir.path().join("b.bin"), &bytes).unwrap();
    let e = cifar::read_cifar(dir.path(), &["b.bin".into()], 1, 0, &classes(10)).unwrap_err().to_string();
    assert!(e.contains("b.bin") && e.contains("3073-byte records"), "{e}");
}

#[test]
fn cifar_label_out_of_range_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = cifar_record(1);
    bytes.extend(cifar_record(12));
    std::fs::write(dir.path().join("b.bin"), &bytes).unwrap();
    let e = cifar::read_cifar(dir.path(), &["b.bin".into()], 1, 0, &classes(10)).unwrap_err().to_string();
    assert!(e.contains("record 1: label 12 out of range 0..10"), "{e}");
}

#[test]
fn cifar_reads_from_a_tar_gz_archive() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("c.tar.gz");
    let gz = flate2::write::GzEncoder::new(std::fs::File::create(&archive).unwrap(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut bytes = cifar_record(3);
    bytes.extend(cifar_record(4));
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_cksum();
    tar.append_data(&mut header, "batches/x.bin", &bytes[..]).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let set = cifar::read_cifar(&archive, &["batches/x.bin".into()], 1, 0, &classes(10)).unwrap();
    assert_eq!(set.labels, vec![3, 4]);
    assert_eq!(set.image(1)[..3], [0, 1, 2]);
    let e = cifar::read_cifar(&archive, &["batches/y.bin".into()], 1, 0, &classes(10)).unwrap_err().to_string();
    assert!(e.contains("archive has no batches/y.bin"), "{e}");
}

fn write_idx(path: &Path, magic: u32, dims: &[u32], payload: &[u8]) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&magic.to_be_bytes()).unwrap();
    for d in dims {
        f.write_all(&d.to_be_bytes()).unwrap();
    }
    f.write_all(payload).unwrap();
}

#[test]
fn idx_wrong_magic_and_bad_labels_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (img, lab) = (dir.path().join("i"), dir.path().join("l"));
    write_idx(&img, 0x0803, &[2, 2, 2], &[0; 8]);
    write_idx(&lab, 0x0803, &[2], &[0, 1]);
    let e = idx::read_idx(&img, &lab, &classes(10)).unwrap_err().to_string();
    assert!(e.contains("idx magic 0x00000803, expected 0x00000801"), "{e}");
    write_idx(&lab, 0x0801, &[2], &[0, 10]);
    let e = idx::read_idx(&img, &lab, &classes(10)).unwrap_err().to_string();
    assert!(e.contains("label 1: 10 out of range"), "{e}");
    write_idx(&lab, 0x0801, &[2], &[0, 9]);
    assert_eq!(idx::read_idx(&img, &lab, &classes(10)).unwrap().labels, vec![0, 9]);
    write_idx(&img, 0x0803, &[3, 2, 2], &[0; 8]);
    let e = idx::read_idx(&img, &lab, &classes(10)).unwrap_err().to_string();
    assert!(e.contains("need 28 bytes"), "{e}");
}

#[test]
fn an_unreadable_image_in_a_folder_tree_is_named() {
    let dir = tempfile::tempdir().unwrap();
    for class in ["a", "b"] {
        std::fs::create_dir(dir.path().join(class)).unwrap();
        let img = image::RgbImage::from_fn(4, 4, |x, y| image::Rgb([x as u8, y as u8, 7]));
        img.save(dir.path().join(class).join("0.png")).unwrap();
    }
    let prep = folder::Preprocess { shape: [3, 4, 4], resize_short: None, center_crop: None };
    let index = folder::index_folder(dir.path()).unwrap();
    let set = folder::load_folder(&index, &prep).unwrap();
    assert_eq!(set.classes, vec!["a", "b"]);
    assert_eq!(set.labels, vec![0, 1]);
    assert_eq!(&set.image(0)[..4], &[0, 1, 2, 3]); // R plane, first row: x
    let bad: PathBuf = dir.path().join("b").join("1.jpg");
    std::fs::write(&bad, b"not a jpeg at all").unwrap();
    let index = folder::index_folder(dir.path()).unwrap();
    let e = folder::load_folder(&index, &prep).unwrap_err().to_string();
    assert!(e.contains("1.jpg") && e.contains("cannot decode"), "{e}");
    let small = folder::Preprocess { shape: [3, 8, 8], ..prep };
    std::fs::remove_file(&bad).unwrap();
    let e = folder::load_folder(&folder::index_folder(dir.path()).unwrap(), &small).unwrap_err().to_string();
    assert!(e.contains("4x4 image, expected 8x8"), "{e}");
}

#[test]
fn synthetic_set_is_deterministic_balanced_and_labelled_within_range() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let m = find_manifest("synthetic").unwrap();
    let train = load_split(&data, &m, Split::Train).unwrap();
    let test = load_split(&data, &m, Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (10_000, 2_000));
    let counts = train.class_counts();
    assert!(counts.iter().all(|&c| (900..1100).contains(&c)), "{counts:?}");
    // regenerating gives the same bytes
    let again = data::synthetic::generate(20250331, 1, 2000, 0.08);
    assert_eq!(std::fs::read(dir.path().join("synthetic/test_batch.bin")).unwrap(), again);
    // the manifest's normalization matches the data
    let n = train.image_len() / 3;
    let stats: Vec<(f64, f64)> = (0..3)
        .map(|ch| {
            let vals: Vec<f64> = (0..train.len())
                .flat_map(|i| train.image(i)[ch * n..(ch + 1) * n].to_vec())
                .map(|p| p as f64 / 255.0)
                .collect();
            let mean = vals.iter().sum::<f64>() / vals.len() as f64;
            (mean, (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64).sqrt())
        })
        .collect();
    for (ch, (mean, std)) in stats.iter().enumerate() {
        assert!(
            (mean - m.normalization.mean[ch] as f64).abs() < 0.005,
            "channel {ch}: mean {mean:.4}, measured {stats:?}"
        );
        assert!((std - m.normalization.std[ch] as f64).abs() < 0.005, "channel {ch}: std {std:.4}, measured {stats:?}");
    }
}

/// The Debian package's Fashion-MNIST files (`apt-get install dataset-fashion-mnist`; .ci/run
/// installs it), imported and loaded: 60,000 + 10,000 verified images.
#[test]
fn fashion_mnist_from_the_debian_package() {
    let from = std::env::var_os("CIM_FASHION_MNIST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/datasets/fashion-mnist"));
    assert!(
        from.exists(),
        "{} missing: apt-get install dataset-fashion-mnist (or set CIM_FASHION_MNIST_DIR)",
        from.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let m = find_manifest("fashion-mnist").unwrap();
    for spec in &m.files {
        data::download::import_file(&data, &m, spec, &from).unwrap();
        assert_eq!(data.status(&m, spec), data::FileStatus::Verified);
    }
    let train = load_split(&data, &m, Split::Train).unwrap();
    let test = load_split(&data, &m, Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(train.class_counts(), vec![6000; 10]);
    assert_eq!(train.shape, [1, 28, 28]);
}

/// The real CIFAR-10 JPEG export beside the checkout (../shared/data/cifar10-jpeg, or
/// $CIM_CIFAR10_JPEG): all 50,000 images, 5,000 per class, labels from the folder names.
#[test]
fn image_folder_reads_the_cifar10_jpeg_tree() {
    let root = std::env::var_os("CIM_CIFAR10_JPEG")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cifar10-jpeg/train"));
    assert!(root.exists(), "{} missing (set CIM_CIFAR10_JPEG)", root.display());
    let start = std::time::Instant::now();
    let index = folder::index_folder(&root).unwrap();
    let prep = folder::Preprocess { shape: [3, 32, 32], resize_short: None, center_crop: None };
    let set = folder::load_folder(&index, &prep).unwrap();
    let secs = start.elapsed().as_secs_f64();
    eprintln!("decoded {} images in {secs:.1} s ({:.0} images/s)", set.len(), set.len() as f64 / secs);
    assert_eq!(set.len(), 50_000);
    assert_eq!(set.classes, ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]);
    assert_eq!(set.class_counts(), vec![5000; 10]);
    // labels follow the folders: the first image of each class folder has that class
    for (c, class) in set.classes.iter().enumerate() {
        let first = index.items.iter().position(|(p, _)| p.parent().unwrap().ends_with(class)).unwrap();
        assert_eq!(set.labels[first] as usize, c);
    }
    // the pixels are real images, not blank
    let mean = set.pixels.iter().map(|&p| p as f64).sum::<f64>() / set.pixels.len() as f64;
    assert!((90.0..160.0).contains(&mean), "mean pixel {mean}");
}

#[test]
fn a_folder_data_set_of_one_class_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("only")).unwrap();
    for i in 0..4 {
        let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8, y as u8, i]));
        img.save(dir.path().join("only").join(format!("{i}.png"))).unwrap();
    }
    let spec = format!("folder:{}", dir.path().display());
    let e = data::load_dataset(&spec, &DataDir::new(dir.path()), data::source::FolderOptions::holdout(1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("1 class folder(s) (only)") && e.contains("at least 2"), "{e}");
}

/// Writes `per_class` 12 x 10 colour images into `root/<class>/` for each class.
fn write_classes(root: &Path, classes: &[&str], per_class: u8) {
    for (c, class) in classes.iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..per_class {
            let img =
                image::RgbImage::from_fn(12, 10, |x, y| image::Rgb([x as u8 * 20, y as u8 * 20, c as u8 * 60 + i]));
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
}

/// A tree of `train/` and `val/` brings its own test split (every `val/` image, whatever the
/// holdout); splits whose classes differ are refused naming them; a resolution resizes and
/// crops every image to a square; `Holdout::All` makes a tree of class folders all test images.
#[test]
fn a_tree_with_its_own_test_split_and_a_resolution() {
    use data::source::{FolderOptions, Holdout};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    write_classes(&root.join("train"), &["a", "b", "c"], 4);
    write_classes(&root.join("val"), &["a", "b", "c"], 2);
    let spec = format!("folder:{}", root.display());
    let data_dir = DataDir::new(dir.path());
    let loaded = data::load_dataset(&spec, &data_dir, FolderOptions::holdout(1)).unwrap();
    assert_eq!((loaded.train.len(), loaded.test.len()), (12, 6));
    assert_eq!(loaded.test.class_counts(), vec![2, 2, 2]);
    assert_eq!(loaded.train.shape, [3, 10, 12]);
    assert_eq!(data::source::class_names(&spec).unwrap(), ["a", "b", "c"]);
    // at a resolution: short side 8, then an 8 x 8 center crop
    let small = FolderOptions { resolution: Some(8), ..FolderOptions::holdout(1) };
    let loaded = data::load_dataset(&spec, &data_dir, small).unwrap();
    assert_eq!((loaded.train.shape, loaded.test.shape), ([3, 8, 8], [3, 8, 8]));
    assert_eq!(data::source::input_shape(&spec, Some(8)).unwrap(), [3, 8, 8]);
    let e = data::source::input_shape(&spec, Some(64)).unwrap_err().to_string();
    assert!(e.contains("12x10 images, smaller than the resolution 64"), "{e}");
    // the content identity covers both splits
    let before = data::source::folder_identity(&root, "t").unwrap();
    std::fs::remove_file(root.join("val/a/1.png")).unwrap();
    assert_ne!(data::source::folder_identity(&root, "t").unwrap(), before);
    // a class missing from val, another not in train
    std::fs::rename(root.join("val/c"), root.join("val/d")).unwrap();
    let e = data::load_dataset(&spec, &data_dir, FolderOptions::holdout(1)).unwrap_err().to_string();
    assert!(e.contains("missing here c") && e.contains("not in train d"), "{e}");
    // every image of a tree of class folders as the test split
    let only_test = dir.path().join("test-only");
    write_classes(&only_test, &["a", "b"], 3);
    let spec = format!("folder:{}", only_test.display());
    let all = FolderOptions { holdout: Holdout::All, resolution: None };
    let loaded = data::load_dataset(&spec, &data_dir, all).unwrap();
    assert_eq!((loaded.train.len(), loaded.test.len()), (0, 6));
    let e = data::load_dataset(&spec, &data_dir, FolderOptions::holdout(3)).unwrap_err().to_string();
    assert!(e.contains("holding out 3 images per class leaves an empty split"), "{e}");
}
