// The app: Android framework only (no AndroidX, no Compose), the Rust core through the nnzip
// library module (../nnzip: the uniffi bindings, JNA and libnnzip.so, built there by cargo-ndk).
//
// Before compiling, packModel runs from the workspace root (two levels up):
//   packModel      scripts/compress-efficientnet.sh (or $NNZIP_MODEL if set) makes the bundled assets/model.nnz:
//                  EfficientNet-Lite0 compressed without labels, cached in out/ (the first run takes ~45 min)
plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

val workspace: File = rootDir.resolve("../..").canonicalFile
val assetsOut = layout.buildDirectory.dir("nnzipAssets")
val shared: File = (System.getenv("NNZIP_SHARED")?.let(::File) ?: workspace.resolve("../shared")).canonicalFile

android {
    namespace = "dev.nnzip.app"
    compileSdk = 35

    defaultConfig {
        applicationId = "dev.nnzip.app"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
    }

    buildTypes {
        release {
            isMinifyEnabled = true
            isShrinkResources = true
            proguardFiles(getDefaultProguardFile("proguard-android-optimize.txt"), "proguard-rules.pro")
            // Debug-signed so `installRelease` works out of the box; use your own key to publish.
            signingConfig = signingConfigs.getByName("debug")
        }
    }

    sourceSets["main"].apply {
        assets.srcDir(assetsOut)
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
    // The model is already compressed: do not spend time deflating it again.
    androidResources { noCompress += "nnz" }
}

dependencies {
    // The bindings, JNA and libnnzip.so for every ABI.
    implementation(project(":nnzip"))
}

val packModel by tasks.registering(Exec::class) {
    description = "Bundles the compressed EfficientNet-Lite0 as assets/model.nnz (or copies \$NNZIP_MODEL)."
    workingDir = workspace
    val out = assetsOut.get().asFile.resolve("model.nnz")
    doFirst { out.parentFile.mkdirs() }
    val given = System.getenv("NNZIP_MODEL")
    if (given != null) {
        commandLine("cp", given, out.absolutePath)
    } else {
        // Compresses once into out/ (kept between builds), then copies.
        environment("NNZIP_SHARED", shared.path)
        commandLine(
            "bash", "-c",
            "bash scripts/compress-efficientnet.sh out/efficientnet_lite0.nnz && cp out/efficientnet_lite0.nnz '${out.absolutePath}'",
        )
    }
}

tasks.named("preBuild") { dependsOn(packModel) }
