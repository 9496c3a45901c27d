// The app: Android framework only (no AndroidX, no Compose), the Rust core through uniffi + JNA.
//
// Before compiling, three tasks run the Rust side from the workspace root (two levels up):
//   cargoNdk       cargo-ndk builds libnnzip.so (profile `mobile`) for arm64-v8a, armeabi-v7a, x86_64
//   uniffiBindings scripts/bindings.sh: the workspace's host build, then the Kotlin bindings into target/bindings/kotlin
//   packModel      scripts/compress-efficientnet.sh (or $NNZIP_MODEL if set) makes the bundled assets/model.nnz:
//                  EfficientNet-Lite0 compressed without labels, cached in out/ (the first run takes ~45 min)
// Needs: Android SDK + NDK (ANDROID_NDK_HOME), `cargo install cargo-ndk`,
// `rustup target add aarch64-linux-android armv7-linux-androideabi x86_64-linux-android`.
plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

val workspace: File = rootDir.resolve("../..").canonicalFile
val jniOut = layout.buildDirectory.dir("rustJniLibs")
val assetsOut = layout.buildDirectory.dir("nnzipAssets")
val shared: File = (System.getenv("NNZIP_SHARED")?.let(::File) ?: workspace.resolve("../shared")).canonicalFile

android {
    namespace = "dev.nnzip.app"
    compileSdk = 35
    ndkVersion = "27.2.12479018"

    defaultConfig {
        applicationId = "dev.nnzip.app"
        minSdk = 26
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        ndk { abiFilters += listOf("arm64-v8a", "armeabi-v7a", "x86_64") }
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
        java.srcDir(workspace.resolve("target/bindings/kotlin"))
        jniLibs.srcDir(jniOut)
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
    // JNA's Android build (its own libjnidispatch.so per ABI) – the only library besides Kotlin's stdlib.
    implementation("net.java.dev.jna:jna:5.17.0@aar")
}

val cargoNdk by tasks.registering(Exec::class) {
    description = "Builds libnnzip.so for the app's ABIs with cargo-ndk (profile mobile)."
    workingDir = workspace
    commandLine(
        "cargo", "ndk",
        "-t", "arm64-v8a", "-t", "armeabi-v7a", "-t", "x86_64",
        "-o", jniOut.get().asFile.absolutePath,
        "build", "-p", "nnzip-bindings", "--lib", "--profile", "mobile",
    )
}

val uniffiBindings by tasks.registering(Exec::class) {
    description = "Generates the Kotlin bindings from the host library (scripts/bindings.sh)."
    workingDir = workspace
    commandLine("bash", "scripts/bindings.sh")
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

tasks.named("preBuild") { dependsOn(cargoNdk, uniffiBindings, packModel) }
