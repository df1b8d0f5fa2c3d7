//! `eval --dataset folder:DIR` on another tree: classes are matched to the model's by name, not
//! by the trees' alphabetical order, and a tree with other classes is refused before any image is
//! read, naming the missing and unknown classes.

use std::path::Path;

use data::DataDir;
use train::{ComputeDevice, RunConfig, TrainOptions};

/// Writes every image of `set` as a PNG into `root/<folder name of its class>/`, twice: the
/// copies sort first and form the "training" part of the tree (from which a folder data set
/// measures its normalization), the originals its last `n` images per class, the test split.
fn export(set: &data::ImageSet, root: &Path, rename: impl Fn(&str) -> String) {
    let [c, h, w] = set.shape;
    assert_eq!(c, 3);
    for i in 0..set.len() {
        let class = &set.classes[set.labels[i] as usize];
        let dir = root.join(rename(&data::source::class_folder_name(class)));
        std::fs::create_dir_all(&dir).unwrap();
        let chw = set.image(i);
        let img = image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
            let at = |ch: usize| chw[ch * h * w + y as usize * w + x as usize];
            image::Rgb([at(0), at(1), at(2)])
        });
        img.save(dir.join(format!("a{i:05}.png"))).unwrap();
        img.save(dir.join(format!("t{i:05}.png"))).unwrap();
    }
}

#[test]
fn eval_on_another_tree_matches_classes_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = DataDir::new(tmp.path().join("data"));
    let config = RunConfig {
        method: "fp".into(),
        epochs: 4,
        batch_size: 64,
        lr: 0.1,
        limit_train: Some(1024),
        limit_test: Some(200),
        ..RunConfig::default()
    };
    let run = tmp.path().join("run");
    let opts = TrainOptions {
        data_dir: data_dir.clone(),
        on_event: train::events::silent(),
        stop_after: None,
        device: ComputeDevice::Cpu,
        init_from: None,
    };
    let summary = train::train(&config, &run, &opts).unwrap().unwrap();
    // the synthetic classes are not in alphabetical order: a tree's folder order is not the model's
    let classes = summary.classes.clone();
    let mut sorted = classes.clone();
    sorted.sort();
    assert_eq!(classes.len(), 10);
    assert_ne!(classes, sorted);
    // the shape its model saw, for counting its hardware
    assert_eq!(summary.input_shape, Some([3, 32, 32]));

    // the run's own test images, as a tree named by class
    let loaded = data::load_dataset("synthetic", &data_dir, data::source::FolderOptions::holdout(0)).unwrap();
    let per_class = 20;
    let mut picked = Vec::new();
    for label in 0..10u16 {
        picked.extend(
            loaded.test.labels.iter().enumerate().filter(|(_, l)| **l == label).map(|(i, _)| i).take(per_class),
        );
    }
    let test = loaded.test.select(&picked);
    let own = train::evaluate_run(&run, Some("synthetic"), None, &data_dir, ComputeDevice::Cpu).unwrap();
    let eval = |tree: &Path| {
        let spec = format!("folder:{}", tree.display());
        train::evaluate_run(
            &run,
            Some(&spec),
            Some(data::source::Holdout::PerClass(per_class)),
            &data_dir,
            ComputeDevice::Cpu,
        )
    };
    let named = tmp.path().join("named");
    export(&test, &named, |c| c.to_string());
    let by_name = eval(&named).unwrap();
    assert_eq!(by_name.images, 200);
    // the same images, labelled by name: near the run's own accuracy (the tree normalizes by its
    // own statistics), far above chance
    assert!(by_name.accuracy > 0.3, "{by_name:?} (own {own:?})");
    assert!((by_name.accuracy - own.accuracy).abs() < 0.1, "{by_name:?} vs {own:?}");
    // its record is named by the tree's content, not by the path it has on this machine
    let records: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("eval-folder"))
        .collect();
    assert_eq!(records.len(), 1, "{records:?}");
    assert!(records[0].starts_with("eval-folder-tree_") && !records[0].contains("named"), "{records:?}");

    // folders named otherwise (even keeping the alphabetical order) are refused, naming them
    let renamed = tmp.path().join("renamed");
    export(&test, &renamed, |c| format!("c-{c}"));
    let e = eval(&renamed).unwrap_err().to_string();
    assert!(e.contains("missing disc, square") && e.contains("unknown c-checker"), "{e}");
    // a tree with fewer classes: refused before any image is decoded
    let fewer = tmp.path().join("fewer");
    export(&test.select(&(0..3 * per_class).collect::<Vec<_>>()), &fewer, |c| c.to_string());
    let e = eval(&fewer).unwrap_err().to_string();
    assert!(e.contains("its 3 classes are not the model's 10") && e.contains("unknown none"), "{e}");
    std::fs::write(fewer.join("disc/t00000.png"), b"not a png").unwrap();
    let e = eval(&fewer).unwrap_err().to_string();
    assert!(e.contains("its 3 classes"), "checked before the damaged image is read: {e}");
}
